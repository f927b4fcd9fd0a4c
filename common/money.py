"""Money is an integer number of minor units plus an ISO 4217 currency code."""

from dataclasses import dataclass

from .errors import ValidationFailed

# The largest amount the platform takes anywhere (budgets, bids): far inside PostgreSQL's bigint even after
# fees are added, and more than any job is worth in any supported currency's minor units.
MAX_AMOUNT_MINOR_UNITS = 10**12

# Minor-unit exponents that differ from 2 (Stripe's list of zero- and three-decimal currencies).
ZERO_DECIMAL = frozenset(
    ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"]
)
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
SUPPORTED_CURRENCIES = (
    frozenset(
        [
            "USD",
            "EUR",
            "GBP",
            "CHF",
            "CAD",
            "AUD",
            "NZD",
            "SEK",
            "NOK",
            "DKK",
            "PLN",
            "CZK",
            "HUF",
            "SGD",
            "HKD",
            "INR",
            "BRL",
            "MXN",
            "ZAR",
            "ILS",
            "AED",
        ]
    )
    | ZERO_DECIMAL
    | THREE_DECIMAL
)


def currency_exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def currency_validate(currency: str) -> str:
    code = (currency or "").upper()
    if code not in SUPPORTED_CURRENCIES:
        raise ValidationFailed(
            f"Unsupported currency {currency!r}.", code="unsupported_currency", fields={"currency": ["unsupported"]}
        )
    return code


def fee_for(amount_minor: int, fee_bps: int) -> int:
    """Platform fee in minor units, rounded half up; exact integer arithmetic, never floats."""
    return (amount_minor * fee_bps + 5_000) // 10_000


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str

    def __str__(self) -> str:
        exponent = currency_exponent(self.currency)
        if exponent == 0:
            return f"{self.amount} {self.currency}"
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**exponent)
        return f"{sign}{whole}.{frac:0{exponent}d} {self.currency}"
