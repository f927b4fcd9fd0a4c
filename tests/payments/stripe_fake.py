"""An offline Stripe, at the SDK's HTTP transport: a `stripe.HTTPClient` subclass handed to `StripeClient`.

- stateful customers, payment intents, charges, refunds (over-refunds refused), transfers and reversals,
  accounts (country, service agreement, deauthorization), account links (`account_update` refused for accounts
  with the Express Dashboard, as Stripe does), Express login links, payouts (read as the connected account),
  disputes and events;
- answers with Stripe's official object shapes (fixtures3.json from stripe/openapi, vendored beside this file
  with its MIT licence), overriding only the fields it models;
- replays the stored response for a repeated Idempotency-Key; a reused key with other parameters is an
  `idempotency_error`;
- rejects parameters that the SDK's typed `...Params` TypedDicts do not define (and missing required ones);
- injects card declines, 429s, 500s and timeouts (before or after the request took effect);
- balance transactions for charges (processing fee: PROCESSING_FEE per currency, with `fee_details`), refunds
  (no fee returned, REFUND_FEE per currency), transfers and disputes (DISPUTE_FEE on the withdrawal, none
  returned when won), `pending` until `available_on` for charges; retrievable at `/v1/balance_transactions/{id}`,
  expandable (`expand[]=balance_transaction`) on charges, refunds and transfers; `GET /v1/balance` sums them per
  currency into available and pending. `balance_transactions_delayed` leaves new charges without one (Stripe
  makes it shortly after the charge) until `balance_transactions_attach()`; `settlement_currency` makes charges
  settle in another currency at `exchange_rate`.

Test cards behave like Stripe's: `pm_card_visa` succeeds, `pm_card_chargeDeclined` declines,
`pm_card_createDispute` succeeds and opens a dispute.
"""

from __future__ import annotations

import copy
import importlib
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

FIXTURES = json.loads((Path(__file__).parent / "stripe_fixtures" / "fixtures3.json").read_text())["resources"]

# (method, path regex) -> (handler name, params module, params class)
ROUTES: list[tuple[str, str, str, str]] = [
    ("POST", r"/v1/customers", "customer_create", "_customer_create_params.CustomerCreateParams"),
    ("GET", r"/v1/customers/(?P<id>[^/]+)", "customer_retrieve", "_customer_retrieve_params.CustomerRetrieveParams"),
    ("POST", r"/v1/payment_intents", "pi_create", "_payment_intent_create_params.PaymentIntentCreateParams"),
    (
        "GET",
        r"/v1/payment_intents/(?P<id>[^/]+)",
        "pi_retrieve",
        "_payment_intent_retrieve_params.PaymentIntentRetrieveParams",
    ),
    (
        "POST",
        r"/v1/payment_intents/(?P<id>[^/]+)/confirm",
        "pi_confirm",
        "_payment_intent_confirm_params.PaymentIntentConfirmParams",
    ),
    (
        "POST",
        r"/v1/payment_intents/(?P<id>[^/]+)/cancel",
        "pi_cancel",
        "_payment_intent_cancel_params.PaymentIntentCancelParams",
    ),
    (
        "POST",
        r"/v1/checkout/sessions",
        "checkout_create",
        "checkout._session_create_params.SessionCreateParams",
    ),
    (
        "GET",
        r"/v1/checkout/sessions/(?P<id>[^/]+)",
        "checkout_retrieve",
        "checkout._session_retrieve_params.SessionRetrieveParams",
    ),
    (
        "POST",
        r"/v1/checkout/sessions/(?P<id>[^/]+)/expire",
        "checkout_expire",
        "checkout._session_expire_params.SessionExpireParams",
    ),
    ("GET", r"/v1/charges/(?P<id>[^/]+)", "charge_retrieve", "_charge_retrieve_params.ChargeRetrieveParams"),
    ("POST", r"/v1/transfers", "transfer_create", "_transfer_create_params.TransferCreateParams"),
    ("GET", r"/v1/transfers", "transfer_list", "_transfer_list_params.TransferListParams"),
    ("GET", r"/v1/transfers/(?P<id>[^/]+)", "transfer_retrieve", "_transfer_retrieve_params.TransferRetrieveParams"),
    (
        "POST",
        r"/v1/transfers/(?P<id>[^/]+)/reversals",
        "reversal_create",
        "_transfer_reversal_create_params.TransferReversalCreateParams",
    ),
    ("POST", r"/v1/refunds", "refund_create", "_refund_create_params.RefundCreateParams"),
    ("GET", r"/v1/refunds", "refund_list", "_refund_list_params.RefundListParams"),
    ("GET", r"/v1/refunds/(?P<id>[^/]+)", "refund_retrieve", "_refund_retrieve_params.RefundRetrieveParams"),
    ("POST", r"/v1/accounts", "account_create", "_account_create_params.AccountCreateParams"),
    ("GET", r"/v1/accounts/(?P<id>[^/]+)", "account_retrieve", "_account_retrieve_params.AccountRetrieveParams"),
    ("POST", r"/v1/account_links", "account_link_create", "_account_link_create_params.AccountLinkCreateParams"),
    (
        "POST",
        r"/v1/accounts/(?P<id>[^/]+)/login_links",
        "login_link_create",
        "_account_login_link_create_params.AccountLoginLinkCreateParams",
    ),
    ("GET", r"/v1/payouts/(?P<id>[^/]+)", "payout_retrieve", "_payout_retrieve_params.PayoutRetrieveParams"),
    ("GET", r"/v1/disputes/(?P<id>[^/]+)", "dispute_retrieve", "_dispute_retrieve_params.DisputeRetrieveParams"),
    ("POST", r"/v1/disputes/(?P<id>[^/]+)", "dispute_update", "_dispute_update_params.DisputeUpdateParams"),
    ("POST", r"/v1/files", "file_create", "_file_create_params.FileCreateParams"),
    ("GET", r"/v1/events/(?P<id>[^/]+)", "event_retrieve", "_event_retrieve_params.EventRetrieveParams"),
    ("GET", r"/v1/balance", "balance_retrieve", "_balance_retrieve_params.BalanceRetrieveParams"),
    (
        "GET",
        r"/v1/balance_transactions",
        "balance_transaction_list",
        "_balance_transaction_list_params.BalanceTransactionListParams",
    ),
    (
        "GET",
        r"/v1/balance_transactions/(?P<id>[^/]+)",
        "balance_transaction_retrieve",
        "_balance_transaction_retrieve_params.BalanceTransactionRetrieveParams",
    ),
]
REQUEST_OPTION_KEYS = {
    "api_key",
    "stripe_version",
    "stripe_account",
    "stripe_context",
    "max_network_retries",
    "idempotency_key",
    "content_type",
    "headers",
}


# Stripe's published minimum charge amounts for the currencies the tests use (minor units); the maximum is eight
# digits; three-decimal currencies take only amounts whose last digit is 0 (docs.stripe.com/currencies).
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "chf": 50, "cad": 50, "aud": 50}
MAXIMUM_CHARGE = 99_999_999
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}

# The fake's fee model (deterministic; Stripe's real pricing depends on the account, card and country): a
# processing fee of basis points + a fixed part per charge, no fee on refunds (Stripe keeps the processing fee and
# returns none of it), a fixed dispute fee on the withdrawal ($15 in the US).
PROCESSING_FEE = {"usd": (290, 30), "eur": (150, 25), "gbp": (150, 20), "jpy": (360, 0)}
DEFAULT_PROCESSING_FEE = (290, 30)
REFUND_FEE = {}  # none by default: set per currency to model regions where refunds cost a fee
DISPUTE_FEE = {"usd": 1500, "eur": 2000, "gbp": 2000, "jpy": 2000}
CHARGE_AVAILABLE_AFTER = 2 * 24 * 3600


def processing_fee(amount: int, currency: str) -> int:
    bps, fixed = PROCESSING_FEE.get(currency.lower(), DEFAULT_PROCESSING_FEE)
    if currency.lower() in THREE_DECIMAL:
        fixed *= 10
    return (amount * bps + 5_000) // 10_000 + fixed


def _amount_check(amount: int, currency: str, *, param: str = "amount", charge: bool = True) -> None:
    currency = currency.lower()
    if currency in THREE_DECIMAL and amount % 10:
        raise FakeError(
            400,
            "invalid_request_error",
            f"Invalid amount: {currency} amounts must be rounded to the nearest ten (the last digit 0).",
            code="invalid_amount",
            param=param,
        )
    if not charge:
        return
    minimum = MINIMUM_CHARGE.get(currency, 500 if currency in THREE_DECIMAL else 50)
    if amount < minimum:
        raise FakeError(
            400,
            "invalid_request_error",
            f"Amount must be at least {minimum} {currency} minor units",
            code="amount_too_small",
            param=param,
        )
    if amount > MAXIMUM_CHARGE:
        raise FakeError(
            400,
            "invalid_request_error",
            "Amount must be no more than 99999999",
            code="amount_too_large",
            param=param,
        )


class FakeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **({"code": code} if code else {}), **extra}}


# ---- request decoding and validation ---------------------------------------------------------------


def _decode_form(pairs: list[tuple[str, str]]) -> dict:
    """`a[b][0]=x` form encoding back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _decode_multipart(body: bytes | str, content_type: str) -> dict:
    """A multipart/form-data body (file uploads) into fields; a file part's value is its bytes, as latin-1 text
    (so the request stays JSON-serializable for the idempotency fingerprint)."""
    raw = body.encode("latin-1") if isinstance(body, str) else body
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    fields: list[tuple[str, str]] = []
    for part in raw.split(b"--" + boundary):
        part = part.removeprefix(b"\r\n")
        if not part or part.startswith(b"--"):
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            fields.append((name.group(1).decode(), value.removesuffix(b"\r\n").decode("latin-1")))
    return _decode_form(fields)


# What Stripe accepts for purpose dispute_evidence: PDF, JPEG or PNG (docs.stripe.com/file-upload).
EVIDENCE_MAGIC = {b"%PDF": "pdf", b"\xff\xd8\xff": "jpg", b"\x89PNG": "png"}


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _params_class(dotted: str) -> type:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"stripe.params.{module}"), name)


def _unwrap(annotation: Any) -> str:
    """The TypedDict name inside `NotRequired["X"]` (a string, a ForwardRef or a generic alias)."""
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) is not None and "Required" in repr(annotation):
        annotation = args[0]
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__forward_arg__", repr(annotation))
    text = text.strip().strip("\"'")
    for wrapper in ("NotRequired[", "Required["):
        if text.startswith(wrapper):
            text = text[len(wrapper) : -1].strip().strip("\"'")
    return text


def _validate(params: Any, cls: type, path: str = "") -> None:
    """Refuse what the SDK's TypedDict does not define, and missing required keys (recursing into dicts)."""
    if not isinstance(params, dict):
        return
    annotations = cls.__annotations__
    known = set(annotations) - (REQUEST_OPTION_KEYS if not path else set())
    for key in params:
        if key not in known:
            raise FakeError(
                400,
                "invalid_request_error",
                f"Received unknown parameter: {path}{key}",
                code="parameter_unknown",
                param=f"{path}{key}",
            )
    for key in getattr(cls, "__required_keys__", ()):
        if key in REQUEST_OPTION_KEYS and not path:
            continue
        if key not in params:
            raise FakeError(
                400,
                "invalid_request_error",
                f"Missing required param: {path}{key}.",
                code="parameter_missing",
                param=f"{path}{key}",
            )
    module = importlib.import_module(cls.__module__)
    for key, value in params.items():
        if not isinstance(value, dict) or key == "metadata":
            continue
        target = getattr(module, _unwrap(annotations[key]), None)
        if isinstance(target, type) and hasattr(target, "__required_keys__"):
            _validate(value, target, f"{path}{key}.")


# ---- the fake -----------------------------------------------------------------------------------


class FakeStripe(stripe.HTTPClient):
    """Stateful, thread-safe fake Stripe API. Hand it to `stripe.StripeClient(http_client=...)`."""

    name = "fake"

    def __init__(self, *, seed: int = 0):
        super().__init__()
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[str, int, str]] = {}
        self.events: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.counters: dict[str, int] = defaultdict(int)
        self.injected: list[tuple[str, str | None]] = []
        self.failure_rate = 0.0
        self.failures: Counter = Counter()
        self.random = random.Random(seed)
        self.livemode = False
        self.checkout_intent_data: dict[str, dict] = {}
        self.platform_country = "US"
        self.account_links: list[dict] = []  # every account link made: its parameters and URL
        self.login_links: list[dict] = []
        self.uploaded: dict[str, bytes] = {}  # file id -> the bytes uploaded (dispute evidence)
        self._headers: dict = {}
        self.balance_transactions_delayed = False
        self.settlement_currency: str | None = None  # charges settle in this currency when set
        self.exchange_rate = 1.0

    # Retries are instant here: the SDK's backoff would only slow the tests down.
    def _sleep_time_seconds(self, num_retries: int) -> float:
        return 0.0

    def close(self) -> None:
        return None

    # -- failure injection
    def inject(self, kind: str, *, count: int = 1, path: str | None = None) -> None:
        """kind: decline | 401 | 429 | 500 | timeout (request not applied) | timeout_after (applied, answer lost)."""
        with self.lock:
            self.injected.extend([(kind, path)] * count)

    def _take_injection(self, method: str, path: str) -> str | None:
        for i, (kind, prefix) in enumerate(self.injected):
            if prefix is None or path.startswith(prefix):
                if kind == "decline" and method != "POST":
                    continue
                del self.injected[i]
                return kind
        if self.failure_rate and self.random.random() < self.failure_rate:
            return "500"
        return None

    # -- transport
    def request(self, method, url, headers, post_data=None, *, _usage=None):
        parts = urlsplit(url)
        path = parts.path
        headers = dict(headers or {})
        content_type = headers.get("Content-Type") or ""
        if method.upper() == "POST" and content_type.startswith("multipart/form-data"):
            params = _decode_multipart(post_data or b"", content_type)
        else:
            raw = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
            params = _decode_form(parse_qsl(raw if method.upper() == "POST" else parts.query, keep_blank_values=True))
        key = headers.get("Idempotency-Key")
        with self.lock:
            self.requests.append((method.upper(), path, params))
            injection = self._take_injection(method.upper(), path)
            if injection:
                self.failures[injection] += 1
            if injection == "timeout":
                raise stripe.APIConnectionError("Request timed out (injected).", should_retry=True)
            if injection == "429":
                return self._respond(
                    429,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "rate_limit",
                            "message": "Too many requests hit the API too quickly.",
                        }
                    },
                )
            if injection == "401":
                return self._respond(
                    401,
                    {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****"}},
                )
            if injection == "500":
                return self._respond(
                    500, {"error": {"type": "api_error", "message": "An unknown error occurred (injected)."}}
                )
            fingerprint = json.dumps([method.upper(), path, params], sort_keys=True)
            if key and method.upper() == "POST" and key in self.idempotency:
                stored_fp, status, body = self.idempotency[key]
                if stored_fp != fingerprint:
                    return self._respond(
                        400,
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the same parameters they were "
                                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                                "different request.",
                            }
                        },
                    )
                return (
                    body,
                    status,
                    {"Request-Id": self._id("req"), "Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
            try:
                if injection == "decline":
                    raise FakeError(
                        402,
                        "card_error",
                        "Your card was declined.",
                        code="card_declined",
                        decline_code="generic_decline",
                    )
                status, result = 200, self._dispatch(method.upper(), path, params, headers)
            except FakeError as exc:
                status, result = exc.status, exc.body
            body = json.dumps(result)
            if key and method.upper() == "POST":
                self.idempotency[key] = (fingerprint, status, body)
            if injection == "timeout_after":
                raise stripe.APIConnectionError(
                    "Connection lost after the request was sent (injected).", should_retry=True
                )
            return body, status, {"Request-Id": self._id("req"), **({"Idempotency-Key": key} if key else {})}

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        raise NotImplementedError

    def _respond(self, status: int, body: dict):
        return json.dumps(body), status, {"Request-Id": self._id("req")}

    def _dispatch(self, method: str, path: str, params: dict, headers: dict) -> dict:
        for route_method, pattern, handler, params_cls in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                _validate(params, _params_class(params_cls))
                self._headers = headers
                return self._expand(getattr(self, handler)(params, **match.groupdict()), params.get("expand"))
        raise FakeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _expand(self, obj: dict, paths: Any) -> dict:
        """`expand[]=balance_transaction`: the id replaced by the object, in the answer only (one level deep)."""
        if not paths:
            return obj
        obj = copy.deepcopy(obj)
        for path in [paths] if isinstance(paths, str) else paths:
            value = obj.get(path)
            if isinstance(value, str) and value in self.objects:
                obj[path] = copy.deepcopy(self.objects[value])
        return obj

    # -- object helpers
    def _id(self, prefix: str) -> str:
        self.counters[prefix] += 1
        return f"{prefix}_fake{self.counters[prefix]:06d}"

    def _new(self, resource: str, prefix: str, **fields) -> dict:
        obj = copy.deepcopy(FIXTURES[resource])
        obj.update(id=self._id(prefix), livemode=self.livemode)
        if "created" in obj:
            obj["created"] = int(time.time())
        if "metadata" in obj:
            obj["metadata"] = {}
        obj.update(fields)
        self.objects[obj["id"]] = obj
        return obj

    def _get(self, object_id: str, kind: str) -> dict:
        obj = self.objects.get(object_id)
        if obj is None or obj.get("object") != kind:
            raise FakeError(
                404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing", param="id"
            )
        return obj

    def _event(self, event_type: str, obj: dict, *, account: str | None = None) -> dict:
        event = copy.deepcopy(FIXTURES["event"])
        event.update(
            id=self._id("evt"),
            type=event_type,
            created=int(time.time()),
            livemode=self.livemode,
            data={"object": copy.deepcopy(obj)},
            api_version="2025-09-30.clover",
        )
        if account:
            event["account"] = account
        self.objects[event["id"]] = event
        self.events.append(event)
        return event

    @staticmethod
    def _int(params: dict, key: str) -> int:
        try:
            return int(params[key])
        except (KeyError, ValueError):
            raise FakeError(400, "invalid_request_error", f"Invalid integer: {params.get(key)}", param=key) from None

    @staticmethod
    def _list(items: list[dict], url: str) -> dict:
        return {"object": "list", "data": items, "has_more": False, "url": url}

    # -- customers
    def customer_create(self, params):
        return self._new(
            "customer",
            "cus",
            email=params.get("email"),
            metadata=params.get("metadata") or {},
            description=params.get("description"),
            name=params.get("name"),
            discount=None,
        )

    def customer_retrieve(self, params, id):
        return self._get(id, "customer")

    # -- payment intents and charges
    def pi_create(self, params):
        amount = self._int(params, "amount")
        _amount_check(amount, params["currency"])
        if params.get("customer"):
            self._get(params["customer"], "customer")
        pi = self._new(
            "payment_intent",
            "pi",
            amount=amount,
            currency=params["currency"],
            status="requires_payment_method",
            amount_received=0,
            transfer_group=params.get("transfer_group"),
            metadata=params.get("metadata") or {},
            customer=params.get("customer"),
            latest_charge=None,
            last_payment_error=None,
            canceled_at=None,
            next_action=None,
            processing=None,
            transfer_data=None,
            description=params.get("description"),
            receipt_email=params.get("receipt_email"),
        )
        pi["client_secret"] = f"{pi['id']}_secret_fake"
        return pi

    # -- checkout sessions (mode=payment: the PaymentIntent is created when the payer confirms, API 2022-08-01+)
    def checkout_create(self, params):
        if params.get("mode") != "payment":
            raise FakeError(400, "invalid_request_error", "Only mode=payment is modelled.", param="mode")
        items = params.get("line_items") or []
        if not items or not all("price_data" in item for item in items):
            raise FakeError(
                400, "invalid_request_error", "line_items with price_data are required.", param="line_items"
            )
        currency = items[0]["price_data"]["currency"]
        amount = sum(int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1)) for item in items)
        _amount_check(amount, currency, param="line_items[0][price_data][unit_amount]")
        if not params.get("success_url"):
            raise FakeError(400, "invalid_request_error", "Missing required param: success_url.", param="success_url")
        customer = params.get("customer")
        if customer:
            self._get(customer, "customer")
        cs = self._new(
            "checkout.session",
            "cs_test",
            mode="payment",
            status="open",
            payment_status="unpaid",
            payment_intent=None,
            amount_subtotal=amount,
            amount_total=amount,
            currency=currency,
            customer=customer,
            customer_email=None,
            client_reference_id=params.get("client_reference_id"),
            metadata=params.get("metadata") or {},
            success_url=params["success_url"],
            cancel_url=params.get("cancel_url"),
            expires_at=int(time.time()) + 24 * 3600,
        )
        cs["url"] = f"https://checkout.stripe.com/c/pay/{cs['id']}"
        self.checkout_intent_data[cs["id"]] = dict(params.get("payment_intent_data") or {})
        return cs

    def checkout_retrieve(self, params, id):
        return self._get(id, "checkout.session")

    def checkout_expire(self, params, id):
        cs = self._get(id, "checkout.session")
        if cs["status"] != "open":
            raise FakeError(
                400,
                "invalid_request_error",
                f'Only Checkout Sessions with a status in ["open"] can be expired. This session has a status of '
                f"{cs['status']}.",
            )
        cs.update(status="expired", url=None)
        self._event("checkout.session.expired", cs)
        return cs

    def pi_retrieve(self, params, id):
        return self._get(id, "payment_intent")

    def pi_confirm(self, params, id):
        pi = self._get(id, "payment_intent")
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise FakeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {pi['status']}; it cannot be confirmed.",
                code="payment_intent_unexpected_state",
            )
        method = params.get("payment_method", "pm_card_visa")
        if method == "pm_card_chargeDeclined":
            pi["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            }
            pi["status"] = "requires_payment_method"
            self._event("payment_intent.payment_failed", pi)
            raise FakeError(
                402,
                "card_error",
                "Your card was declined.",
                code="card_declined",
                decline_code="generic_decline",
                payment_intent=copy.deepcopy(pi),
            )
        charge = self._new(
            "charge",
            "ch",
            amount=pi["amount"],
            amount_captured=pi["amount"],
            amount_refunded=0,
            captured=True,
            currency=pi["currency"],
            payment_intent=pi["id"],
            paid=True,
            refunded=False,
            disputed=False,
            status="succeeded",
            transfer_group=pi["transfer_group"],
            metadata=dict(pi["metadata"]),
            balance_transaction=None,
        )
        if not self.balance_transactions_delayed:
            self._charge_balance_transaction(charge)
        pi.update(
            status="succeeded",
            latest_charge=charge["id"],
            amount_received=pi["amount"],
            last_payment_error=None,
            payment_method=method,
        )
        self._event("charge.succeeded", charge)
        self._event("payment_intent.succeeded", pi)
        if method == "pm_card_createDispute":
            self.dispute_open(charge["id"])
        return pi

    def pi_cancel(self, params, id):
        pi = self._get(id, "payment_intent")
        if pi["status"] in ("succeeded", "canceled"):
            raise FakeError(
                400,
                "invalid_request_error",
                f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}.",
                code="payment_intent_unexpected_state",
            )
        pi.update(
            status="canceled", canceled_at=int(time.time()), cancellation_reason=params.get("cancellation_reason")
        )
        self._event("payment_intent.canceled", pi)
        return pi

    def charge_retrieve(self, params, id):
        return self._get(id, "charge")

    # -- transfers
    def transfer_create(self, params):
        amount = self._int(params, "amount")
        _amount_check(amount, params["currency"], charge=False)
        account = self.objects.get(params["destination"])
        if account is None or account.get("object") != "account":
            raise FakeError(
                400,
                "invalid_request_error",
                f"No such destination: '{params['destination']}'",
                code="resource_missing",
                param="destination",
            )
        if account.get("deauthorized"):
            raise FakeError(
                400,
                "invalid_request_error",
                f"No such destination: '{params['destination']}'",
                code="resource_missing",
                param="destination",
            )
        if account.get("country") != self.platform_country and (
            (account.get("tos_acceptance") or {}).get("service_agreement") != "recipient"
        ):
            raise FakeError(
                400,
                "invalid_request_error",
                f"Funds can't be sent to accounts located in {account.get('country')} when the account is under "
                "the `full` service agreement. Use the `recipient` service agreement for cross-border payouts.",
                code="transfers_not_allowed",
            )
        if account["capabilities"].get("transfers") != "active":
            raise FakeError(
                400,
                "invalid_request_error",
                "Your destination account needs to have at least one of the following capabilities enabled: "
                "transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
            )
        source = params.get("source_transaction")
        if source:
            charge = self._get(source, "charge")
            used = sum(
                o["amount"]
                for o in self.objects.values()
                if o.get("object") == "transfer" and o.get("source_transaction") == source
            )
            if used + amount > charge["amount"] - charge["amount_refunded"]:
                raise FakeError(
                    400,
                    "invalid_request_error",
                    "Insufficient funds in the source transaction for this transfer.",
                    code="balance_insufficient",
                )
        tr = self._new(
            "transfer",
            "tr",
            amount=amount,
            amount_reversed=0,
            currency=params["currency"],
            destination=params["destination"],
            source_transaction=source,
            transfer_group=params.get("transfer_group"),
            metadata=params.get("metadata") or {},
            reversed=False,
            description=params.get("description"),
        )
        tr["reversals"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/transfers/{tr['id']}/reversals",
        }
        tr["balance_transaction"] = self._balance_transaction(
            tr, type_="transfer", amount=-amount, currency=tr["currency"]
        )["id"]
        self._event("transfer.created", tr)
        return tr

    def transfer_retrieve(self, params, id):
        return self._get(id, "transfer")

    def transfer_list(self, params):
        group = params.get("transfer_group")
        items = [
            o
            for o in self.objects.values()
            if o.get("object") == "transfer" and (group is None or o.get("transfer_group") == group)
        ]
        return self._list(list(reversed(items)), "/v1/transfers")

    def reversal_create(self, params, id):
        tr = self._get(id, "transfer")
        amount = self._int(params, "amount") if "amount" in params else tr["amount"] - tr["amount_reversed"]
        if amount <= 0 or tr["amount_reversed"] + amount > tr["amount"]:
            raise FakeError(
                400,
                "invalid_request_error",
                "Amount to reverse exceeds the transfer's unreversed amount.",
                code="amount_too_large",
                param="amount",
            )
        rev = self._new(
            "transfer_reversal",
            "trr",
            amount=amount,
            currency=tr["currency"],
            transfer=tr["id"],
            metadata=params.get("metadata") or {},
        )
        tr["amount_reversed"] += amount
        tr["reversed"] = tr["amount_reversed"] == tr["amount"]
        tr["reversals"]["data"].append(rev)
        self._event("transfer.reversed", tr)
        return rev

    # -- refunds
    def refund_create(self, params):
        if "payment_intent" in params:
            pi = self._get(params["payment_intent"], "payment_intent")
            if not pi.get("latest_charge"):
                raise FakeError(
                    400,
                    "invalid_request_error",
                    "This PaymentIntent does not have a successful charge to refund.",
                    code="charge_not_refundable",
                )
            charge = self._get(pi["latest_charge"], "charge")
        elif "charge" in params:
            charge = self._get(params["charge"], "charge")
        else:
            raise FakeError(
                400, "invalid_request_error", "One of charge or payment_intent is required.", code="parameter_missing"
            )
        disputed = [
            d
            for d in self.of_kind("dispute")
            if d["charge"] == charge["id"] and d["status"] not in ("won", "warning_closed")
        ]
        if any(not d.get("is_charge_refundable") for d in disputed):
            raise FakeError(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has been charged back; refunds are not possible.",
                code="charge_disputed",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = self._int(params, "amount") if "amount" in params else remaining
        _amount_check(amount, charge["currency"], charge=False)
        if charge["amount_refunded"] >= charge["amount"]:
            raise FakeError(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount <= 0 or amount > remaining:
            raise FakeError(
                400,
                "invalid_request_error",
                f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on charge "
                f"(${remaining / 100:.2f})",
                code="amount_too_large",
                param="amount",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        re_ = self._new(
            "refund",
            "re",
            amount=amount,
            currency=charge["currency"],
            charge=charge["id"],
            payment_intent=charge["payment_intent"],
            status="succeeded",
            metadata=params.get("metadata") or {},
            reason=params.get("reason"),
        )
        fee = REFUND_FEE.get(charge["currency"], 0)
        re_["balance_transaction"] = self._balance_transaction(
            re_, type_="refund", amount=-amount, currency=charge["currency"], fee=fee, description="Refund fee"
        )["id"]
        self._event("charge.refunded", charge)
        self._event("refund.created", re_)
        return re_

    def refund_retrieve(self, params, id):
        return self._get(id, "refund")

    def refund_list(self, params):
        pi = params.get("payment_intent")
        items = [
            o
            for o in self.objects.values()
            if o.get("object") == "refund" and (pi is None or o.get("payment_intent") == pi)
        ]
        return self._list(list(reversed(items)), "/v1/refunds")

    # -- accounts
    def account_create(self, params):
        agreement = (params.get("tos_acceptance") or {}).get("service_agreement") or "full"
        if agreement == "recipient" and "card_payments" in (params.get("capabilities") or {}):
            raise FakeError(
                400,
                "invalid_request_error",
                "Accounts under the `recipient` service agreement cannot request the `card_payments` capability.",
                param="capabilities",
            )
        acct = copy.deepcopy(FIXTURES["account"])
        acct.update(
            id=self._id("acct"),
            email=params.get("email"),
            country=params.get("country") or self.platform_country,  # Stripe defaults to the platform's country
            metadata=params.get("metadata") or {},
            details_submitted=False,
            payouts_enabled=False,
            charges_enabled=False,
            capabilities=dict.fromkeys(params.get("capabilities") or {}, "inactive"),
            controller={
                "type": "application",
                "is_controller": True,
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
                "stripe_dashboard": {"type": "express"},
            },
            created=int(time.time()),
            type="none",
            tos_acceptance={"date": None, "ip": None, "user_agent": None, "service_agreement": agreement},
        )
        acct["requirements"] = {
            **(acct.get("requirements") or {}),
            "currently_due": ["external_account", "tos_acceptance.date"],
        }
        self.objects[acct["id"]] = acct
        return acct

    def _connected(self, account_id: str) -> dict:
        acct = self._get(account_id, "account")
        if acct.get("deauthorized"):
            raise FakeError(
                403,
                "invalid_request_error",
                f"The provided key 'sk_test_****fake' does not have access to account '{account_id}' (or that "
                "account does not exist). Application access may have been revoked.",
                code="account_invalid",
            )
        return acct

    def account_retrieve(self, params, id):
        return self._connected(id)

    def account_link_create(self, params):
        acct = self._connected(params["account"])
        if params.get("type") == "account_update" and acct["controller"].get("stripe_dashboard", {}).get("type") in (
            "express",
            "full",
        ):
            raise FakeError(
                400,
                "invalid_request_error",
                "You cannot create `account_update` type Account Links for accounts with access to a Stripe-hosted "
                "Dashboard.",
                param="type",
            )
        link = copy.deepcopy(FIXTURES["account_link"])
        link.update(
            created=int(time.time()),
            expires_at=int(time.time()) + 300,
            url=f"https://connect.stripe.com/setup/e/{params['account']}/fake{self._id('link')}",
        )
        self.account_links.append({**params, "url": link["url"]})
        return link

    def login_link_create(self, params, id):
        acct = self._connected(id)
        if acct["controller"].get("stripe_dashboard", {}).get("type") != "express":
            raise FakeError(
                400, "invalid_request_error", "Login links are only for accounts with the Express Dashboard."
            )
        if not acct["details_submitted"]:
            raise FakeError(
                400,
                "invalid_request_error",
                "Cannot create a login link for an account that has not completed onboarding.",
            )
        link = copy.deepcopy(FIXTURES["login_link"])
        link.update(created=int(time.time()), url=f"https://connect.stripe.com/express/{id}/fake{self._id('login')}")
        self.login_links.append({"account": id, "url": link["url"]})
        return link

    def payout_retrieve(self, params, id):
        payout = self.objects.get(id)
        account = self._headers.get("Stripe-Account")
        if payout is None or payout.get("object") != "payout" or payout["_account"] != account:
            raise FakeError(
                404, "invalid_request_error", f"No such payout: '{id}'", code="resource_missing", param="id"
            )
        if account:
            self._connected(account)
        return {k: v for k, v in payout.items() if not k.startswith("_")}

    # -- balance transactions and the balance
    def _balance_transaction(
        self,
        source: dict,
        *,
        type_: str,
        amount: int,
        currency: str,
        fee: int = 0,
        description: str = "",
        exchange_rate: float | None = None,
        pending_for: int = 0,
    ) -> dict:
        now = int(time.time())
        txn = self._new(
            "balance_transaction",
            "txn",
            amount=amount,
            currency=currency,
            fee=fee,
            fee_details=(
                [
                    {
                        "amount": fee,
                        "application": None,
                        "currency": currency,
                        "description": description or "Stripe processing fees",
                        "type": "stripe_fee",
                    }
                ]
                if fee
                else []
            ),
            net=amount - fee,
            source=source["id"],
            type=type_,
            reporting_category=type_,
            description=None,
            exchange_rate=exchange_rate,
            created=now,
            available_on=now + pending_for,
            status="pending" if pending_for else "available",
        )
        return txn

    def _charge_balance_transaction(self, charge: dict) -> dict:
        currency, amount, rate = charge["currency"], charge["amount"], None
        if self.settlement_currency and self.settlement_currency != currency:
            currency, rate = self.settlement_currency, self.exchange_rate
            amount = round(amount * rate)
        txn = self._balance_transaction(
            charge,
            type_="charge",
            amount=amount,
            currency=currency,
            fee=processing_fee(amount, currency),
            exchange_rate=rate,
            pending_for=CHARGE_AVAILABLE_AFTER,
        )
        charge["balance_transaction"] = txn["id"]
        return txn

    def balance_transaction_retrieve(self, params, id):
        return self._get(id, "balance_transaction")

    def balance_transaction_list(self, params):
        created = params.get("created") or {}
        gte = int(created.get("gte", 0)) if isinstance(created, dict) else int(created)
        items = [
            txn
            for txn in self.of_kind("balance_transaction")
            if (not params.get("type") or txn["type"] == params["type"]) and txn["created"] >= gte
        ]
        return self._list(list(reversed(items)), "/v1/balance_transactions")

    def balance_retrieve(self, params):
        now = int(time.time())
        available: dict[str, int] = defaultdict(int)
        pending: dict[str, int] = defaultdict(int)
        for txn in self.of_kind("balance_transaction"):
            if txn["status"] == "available" or txn["available_on"] <= now:
                available[txn["currency"]] += txn["net"]
            else:
                pending[txn["currency"]] += txn["net"]
        balance = copy.deepcopy(FIXTURES["balance"])
        balance.update(
            livemode=self.livemode,
            available=[{"amount": v, "currency": c, "source_types": {"card": v}} for c, v in sorted(available.items())],
            pending=[{"amount": v, "currency": c, "source_types": {"card": v}} for c, v in sorted(pending.items())],
        )
        return balance

    # -- disputes and events
    def dispute_retrieve(self, params, id):
        dispute = self._get(id, "dispute")
        # Always the balance transactions' current state, as full objects (Stripe includes them expanded).
        dispute["balance_transactions"] = [
            copy.deepcopy(self.objects[txn["id"]]) for txn in dispute.get("balance_transactions") or []
        ]
        return dispute

    def file_create(self, params):
        if params.get("purpose") != "dispute_evidence":
            raise FakeError(400, "invalid_request_error", "Only purpose=dispute_evidence is modelled.", param="purpose")
        content = str(params.get("file") or "").encode("latin-1")
        kind = next((kind for magic, kind in EVIDENCE_MAGIC.items() if content.startswith(magic)), None)
        if kind is None:
            raise FakeError(
                400,
                "invalid_request_error",
                "Invalid file: must be a PDF, JPEG, or PNG for purpose dispute_evidence.",
                param="file",
            )
        if len(content) > 4 * 1024 * 1024:
            raise FakeError(400, "invalid_request_error", "The file is larger than 4 MB.", param="file")
        uploaded = self._new("file", "file", purpose="dispute_evidence", size=len(content), type=kind, links=None)
        self.uploaded[uploaded["id"]] = content
        return uploaded

    def dispute_update(self, params, id):
        dispute = self._get(id, "dispute")
        if dispute["status"] not in ("needs_response", "warning_needs_response"):
            raise FakeError(
                400,
                "invalid_request_error",
                f"This dispute is {dispute['status']} and cannot be updated.",
                code="dispute_already_submitted" if "review" in dispute["status"] else "dispute_closed",
            )
        evidence = params.get("evidence") or {}
        for field, value in evidence.items():
            if field.endswith(("_file", "_documentation", "communication", "receipt", "policy", "signature")):
                self._get(value, "file")
        dispute["evidence"] = {**(dispute.get("evidence") or {}), **evidence}
        dispute["metadata"] = {**(dispute.get("metadata") or {}), **(params.get("metadata") or {})}
        if params.get("submit", "true") == "true":
            details = dispute.setdefault("evidence_details", {})
            details.update(has_evidence=True, submission_count=int(details.get("submission_count") or 0) + 1)
            dispute["status"] = "warning_under_review" if dispute["status"].startswith("warning_") else "under_review"
            self._event("charge.dispute.updated", dispute)
        return dispute

    def event_retrieve(self, params, id):
        return self._get(id, "event")

    # ---- test helpers (the other side of Stripe: customers, banks, onboarding) ------------------
    def account_activate(self, account_id: str) -> dict:
        with self.lock:
            acct = self._get(account_id, "account")
            acct["capabilities"]["transfers"] = "active"
            acct.update(details_submitted=True, payouts_enabled=True)
            acct["requirements"]["currently_due"] = []
            capability = copy.deepcopy(FIXTURES["capability"])
            capability.update(account=account_id, id="transfers", status="active")
            self._event("capability.updated", capability, account=account_id)
            return self._event("account.updated", acct, account=account_id)

    def account_require(self, account_id: str, fields: list[str], *, pause_transfers: bool = True) -> dict:
        """Stripe asks an onboarded account for more information (e.g. a new verification document)."""
        with self.lock:
            acct = self._get(account_id, "account")
            acct["requirements"]["currently_due"] = list(fields)
            if pause_transfers:
                acct["capabilities"]["transfers"] = "inactive"
            return self._event("account.updated", acct, account=account_id)

    def account_deauthorize(self, account_id: str) -> dict:
        """The account disconnects from the platform: Stripe sends account.application.deauthorized (its object is
        the platform's application) and refuses the platform's key for the account from then on."""
        with self.lock:
            acct = self._get(account_id, "account")
            acct["deauthorized"] = True
            application = copy.deepcopy(FIXTURES["application"])
            application.update(id="ca_fake_platform", name="Speedproof")
            return self._event("account.application.deauthorized", application, account=account_id)

    def payout_fail(self, account_id: str, *, code: str = "account_closed", amount: int = 1000) -> dict:
        """A payout from the connected account to its bank fails."""
        return self._payout_end(account_id, status="failed", amount=amount, code=code)

    def payout_pay(self, account_id: str, *, amount: int = 1000) -> dict:
        """A payout from the connected account reaches its bank."""
        return self._payout_end(account_id, status="paid", amount=amount, code=None)

    def _payout_end(self, account_id: str, *, status: str, amount: int, code: str | None) -> dict:
        with self.lock:
            self._get(account_id, "account")
            payout = self._new(
                "payout",
                "po",
                amount=amount,
                currency="usd",
                status=status,
                failure_code=code,
                failure_message="The bank account has been closed." if code else None,
                _account=account_id,
            )
            visible = {k: v for k, v in payout.items() if not k.startswith("_")}
            return self._event(f"payout.{status}", visible, account=account_id)

    def checkout_pay(self, session_id: str, payment_method: str = "pm_card_visa", *, processing: bool = False) -> dict:
        """The payer completes the hosted page: Checkout creates its PaymentIntent from payment_intent_data, then
        it succeeds (a card) or stays `processing` (a delayed method, e.g. a bank debit)."""
        with self.lock:
            cs = self._get(session_id, "checkout.session")
            if cs["status"] != "open":
                raise FakeError(400, "invalid_request_error", f"This Checkout Session is {cs['status']}.")
            data = self.checkout_intent_data[session_id]
            pi = self.pi_create(
                {
                    "amount": cs["amount_total"],
                    "currency": cs["currency"],
                    "customer": cs["customer"],
                    "transfer_group": data.get("transfer_group"),
                    "metadata": data.get("metadata") or {},
                    "description": data.get("description"),
                    "receipt_email": data.get("receipt_email"),
                }
            )
            cs["payment_intent"] = pi["id"]
            if processing:
                pi.update(status="processing", payment_method=payment_method)
                self._event("payment_intent.processing", pi)
                cs.update(status="complete", payment_status="unpaid", url=None)
                return self._event("checkout.session.completed", cs)
            self.pi_confirm({"payment_method": payment_method}, id=pi["id"])
            cs.update(status="complete", payment_status="paid", url=None)
            return self._event("checkout.session.completed", cs)

    def payment_intent_settle(self, payment_intent_id: str) -> dict:
        """A `processing` payment (bank debit) clears."""
        with self.lock:
            pi = self._get(payment_intent_id, "payment_intent")
            pi["status"] = "requires_confirmation"
            self.pi_confirm({"payment_method": pi.get("payment_method") or "pm_card_visa"}, id=pi["id"])
            for cs in self.of_kind("checkout.session"):
                if cs.get("payment_intent") == pi["id"]:
                    cs["payment_status"] = "paid"
                    self._event("checkout.session.async_payment_succeeded", cs)
            return pi

    def dispute_open(self, charge_id: str, *, inquiry: bool = False, amount: int | None = None) -> dict:
        """A chargeback (funds withdrawn at once, the charge no longer refundable) or an inquiry (`warning_*`:
        nothing withdrawn, the charge still refundable: refunding it avoids the chargeback and its fee)."""
        with self.lock:
            charge = self._get(charge_id, "charge")
            dispute = self._new(
                "dispute",
                "dp",
                amount=amount if amount is not None else charge["amount"] - charge["amount_refunded"],
                currency=charge["currency"],
                charge=charge_id,
                payment_intent=charge["payment_intent"],
                status="warning_needs_response" if inquiry else "needs_response",
                is_charge_refundable=inquiry,
                reason="fraudulent",
                balance_transactions=[],
                evidence={},
                evidence_details={"has_evidence": False, "submission_count": 0, "past_due": False, "due_by": None},
            )
            withdrawal = self._balance_transaction(
                dispute,
                type_="adjustment",
                amount=-dispute["amount"],
                currency=dispute["currency"],
                fee=DISPUTE_FEE.get(dispute["currency"], 1500),
                description="Dispute fee",
            )
            dispute["balance_transactions"].append(copy.deepcopy(withdrawal))
            charge["disputed"] = True
            self._event("charge.dispute.created", dispute)
            if not inquiry:
                self._event("charge.dispute.funds_withdrawn", dispute)
            return dispute

    def dispute_close(self, dispute_id: str, status: str) -> dict:
        with self.lock:
            dispute = self._get(dispute_id, "dispute")
            dispute["status"] = status
            dispute["is_charge_refundable"] = False
            if status == "won":
                reinstated = self._balance_transaction(
                    dispute, type_="adjustment", amount=dispute["amount"], currency=dispute["currency"]
                )
                dispute["balance_transactions"].append(copy.deepcopy(reinstated))
            event = self._event("charge.dispute.closed", dispute)
            if status == "won":
                self._event("charge.dispute.funds_reinstated", dispute)
            return event

    def refund_fail(self, refund_id: str) -> dict:
        with self.lock:
            refund = self._get(refund_id, "refund")
            refund.update(status="failed", failure_reason="expired_or_canceled_card")
            charge = self._get(refund["charge"], "charge")
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
            self._event("refund.updated", refund)
            return self._event("refund.failed", refund)

    def platform_fee_bill(self, amount: int, description: str, *, currency: str = "usd") -> dict:
        """Stripe bills the platform a Connect fee (e.g. active accounts, payouts): a `stripe_fee` balance transaction
        of its own, with no source object."""
        with self.lock:
            txn = self._balance_transaction({"id": None}, type_="stripe_fee", amount=-amount, currency=currency)
            txn["description"] = description
            return txn

    def balance_transactions_attach(self) -> list[dict]:
        """Stripe made the balance transactions of charges that had none yet."""
        with self.lock:
            return [
                self._charge_balance_transaction(charge)
                for charge in self.of_kind("charge")
                if not charge.get("balance_transaction")
            ]

    def balance_transactions_make_available(self) -> None:
        """Time passes: every pending balance transaction becomes available."""
        with self.lock:
            for txn in self.of_kind("balance_transaction"):
                txn.update(status="available", available_on=min(txn["available_on"], int(time.time())))

    def balance_transaction_of(self, object_id: str) -> dict:
        """The balance transaction of a charge, refund or transfer (the stored object: edit it to plant a change)."""
        return self.objects[self.objects[object_id]["balance_transaction"]]

    def count(self, kind: str) -> int:
        return sum(1 for o in self.objects.values() if o.get("object") == kind)

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects.values() if o.get("object") == kind]
