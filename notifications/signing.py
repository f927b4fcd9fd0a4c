"""Stripe-style signatures: `Speedproof-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.

One `v1=` per secret that signs (two during a rotation's overlap); a receiver accepts the message when any of
them matches its secret and `t` is recent. Plain standard library: nothing here needs a dependency.
"""

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Speedproof-Signature"
SECRET_PREFIX = "whsec_"


def secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(*, secrets_signing: list[str], timestamp: int, body: bytes) -> str:
    signatures = [f"v1={signature_compute(secret=s, timestamp=timestamp, body=body)}" for s in secrets_signing]
    return ",".join([f"t={timestamp}", *signatures])


def signature_verify(*, header: str, body: bytes, secret: str, now: int, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (docs/webhooks.md has the same check in ten lines)."""
    parts = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [value for key, value in parts if key == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit() or abs(now - int(timestamps[0])) > tolerance_seconds:
        return False
    expected = signature_compute(secret=secret, timestamp=int(timestamps[0]), body=body)
    return any(hmac.compare_digest(expected, value) for key, value in parts if key == "v1")
