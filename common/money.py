"""Money is an integer number of minor units plus an ISO 4217 currency code.

The one home of currency facts: minor-unit exponents, the amounts Stripe accepts per currency (minimum and maximum
charge, three-decimal rounding) and the rule that a job is only posted in a currency the platform settles in.
"""

from dataclasses import dataclass

from django.conf import settings

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


# Stripe's minimum charge amounts (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts), in minor
# units of the currency itself; they hold when the charge and settlement currency are the same, which the
# settlement rule below makes true. A settlement currency missing here takes the table's USD-like floor, 0.50
# of the major unit.
STRIPE_MINIMUM_CHARGE = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}
# "The amount value supports up to eight digits" (Stripe API reference, PaymentIntent `amount`).
STRIPE_MAXIMUM_CHARGE = 99_999_999


def currency_amount_step(currency: str) -> int:
    """The smallest step a charge, refund or transfer amount may take: Stripe requires three-decimal currencies'
    amounts to end in 0 (docs.stripe.com/currencies#three-decimal)."""
    return 10 if currency.upper() in THREE_DECIMAL else 1


def currency_minimum_charge(currency: str) -> int:
    code = currency.upper()
    if code in STRIPE_MINIMUM_CHARGE:
        return STRIPE_MINIMUM_CHARGE[code]
    exponent = currency_exponent(code)
    return 50 * 10 ** (exponent - 2) if exponent >= 2 else 50


def amount_round_down(amount_minor: int, currency: str) -> int:
    """Round down to an amount the provider accepts (a multiple of the currency's step)."""
    step = currency_amount_step(currency)
    return amount_minor - amount_minor % step


def settlement_currencies() -> tuple[str, ...]:
    return tuple(code.upper() for code in settings.PLATFORM_SETTLEMENT_CURRENCIES)


def currency_validate_settlement(currency: str) -> str:
    """A supported currency the platform settles in. Stripe transfers must be in the currency of the charge's
    balance transaction, which is the platform's settlement currency: a job in any other currency could be
    funded but never released, so it cannot be posted at all."""
    code = currency_validate(currency)
    if code not in settlement_currencies():
        raise ValidationFailed(
            f"Jobs are paid in {', '.join(settlement_currencies())}; {code} is not a settlement currency of "
            "this platform.",
            code="currency_not_settled",
            fields={"currency": [f"one of {', '.join(settlement_currencies())}"]},
        )
    return code


def fee_for(amount_minor: int, fee_bps: int, *, currency: str | None = None) -> int:
    """Platform fee in minor units, rounded half up (to the currency's amount step when given); exact integer
    arithmetic, never floats."""
    step = currency_amount_step(currency) if currency else 1
    return (amount_minor * fee_bps + 5_000 * step) // (10_000 * step) * step


def funded_total(amount_minor: int, currency: str, fee_bps: int) -> int:
    """What the company pays for a bid of `amount_minor`: the amount plus the platform fee."""
    return amount_minor + fee_for(amount_minor, fee_bps, currency=currency)


def charge_amount_validate(amount_minor: int, currency: str, *, field: str = "amount", charged: int | None = None):
    """Refuse an amount that would make a charge Stripe does not accept.

    `amount_minor` is what the caller entered (a budget, a bid); `charged` what would actually be charged for it
    (amount + fee), when different. Codes: amount_not_payable_step, amount_below_minimum, amount_above_maximum.
    """
    code = currency.upper()
    charged = amount_minor if charged is None else charged
    step = currency_amount_step(code)
    if amount_minor % step:
        raise ValidationFailed(
            f"{code} amounts must be a multiple of {step} minor units (the last digit 0).",
            code="amount_not_payable_step",
            fields={field: [f"a multiple of {step}"]},
        )
    minimum = currency_minimum_charge(code)
    if charged < minimum:
        raise ValidationFailed(
            f"The charge for this amount ({Money(charged, code)}) is below the minimum charge of "
            f"{Money(minimum, code)}.",
            code="amount_below_minimum",
            fields={field: [f"the charge must be at least {minimum} minor units"]},
        )
    if charged > STRIPE_MAXIMUM_CHARGE:
        raise ValidationFailed(
            f"The charge for this amount ({Money(charged, code)}) is above the maximum single charge of "
            f"{Money(STRIPE_MAXIMUM_CHARGE, code)}.",
            code="amount_above_maximum",
            fields={field: [f"the charge must be at most {STRIPE_MAXIMUM_CHARGE} minor units"]},
        )
    return amount_minor


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
