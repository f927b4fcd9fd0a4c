"""Ed25519 certificates over the decision-bearing fields of a report.

The certificate carries its payload (the signed fields), so anyone holding the platform's public key
can check it without the runner, the report or the database; ``verify_certificate(..., report=...)``
additionally checks that a report says the same thing as the certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .violations import violations_public

ALGORITHM = "Ed25519"
CERTIFICATE_FORMAT = 1


class CertificateError(ValueError):
    pass


def canonical_json(value: Any) -> bytes:
    """Deterministic bytes: sorted keys, no whitespace, ASCII, floats with repr precision; NaN refused."""
    return json.dumps(
        _canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(repr(value))
    return value


def decision_fields(report: dict[str, Any]) -> dict[str, Any]:
    """Everything a payout depends on, and what identifies the measured artefacts. Fields newer runners
    added are signed where the report has them, so certificates of older reports still check."""
    fields = {
        "runner_version": report["runner_version"],
        "decision": report["decision"],
        "reason": report["reason"],
        "payout_fraction": report["payout_fraction"],
        "tier": report["tier"],
        "criteria_spec": report["criteria_spec"],
        "criteria": [
            {
                "label": c["label"],
                "decision": c["decision"],
                "estimate": c["estimate"],
                "interval": c["interval"],
                "p_value_pass": c["p_value_pass"],
                "p_value_fail": c["p_value_fail"],
                "self_reported": c["self_reported"],
            }
            for c in report["criteria"]
        ],
        "correctness": {
            "passed": report["correctness"]["passed"],
            "outputs_compared": report["correctness"]["outputs_compared"],
        },
        "runs": {"pairs": report["runs"]["pairs"], "total": report["runs"]["total"], "looks": report["runs"]["looks"]},
        "sha256": report["sha256"],
        "settings": report["settings"],
        "finished_at": report["timings"]["finished_at"],
        "environment": {k: report["environment"].get(k) for k in ("cpu_model", "cpu_count", "kernel", "gpu")},
    }
    if "reason_code" in report:
        fields["reason_code"] = report["reason_code"]
    if "sandbox_violations" in report:
        fields["sandbox_violations"] = violations_public(report["sandbox_violations"])
    return fields


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
        except ValueError as error:
            raise CertificateError("not an Ed25519 public key (PEM or base64 raw)") from error
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError("not an Ed25519 public key")
    return key


def sign_report(report: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    payload = decision_fields(report)
    signature = key.sign(canonical_json(payload))
    return {
        "format": CERTIFICATE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "payload": payload,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def verify_certificate(
    certificate: dict[str, Any], public_key: Ed25519PublicKey, report: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Returns the signed payload; raises ``CertificateError`` if anything does not check out."""
    try:
        if certificate.get("algorithm") != ALGORITHM or certificate.get("format") != CERTIFICATE_FORMAT:
            raise CertificateError("unsupported certificate format or algorithm")
        if certificate.get("key_id") != key_id(public_key):
            raise CertificateError("certificate was signed with a different key (key_id mismatch)")
        signature = base64.b64decode(certificate["signature"], validate=True)
        payload = certificate["payload"]
        public_key.verify(signature, canonical_json(payload))
    except InvalidSignature as error:
        raise CertificateError("signature does not match the certificate's content") from error
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, CertificateError):
            raise
        raise CertificateError(f"malformed certificate: {error}") from error
    if report is not None and canonical_json(decision_fields(report)) != canonical_json(payload):
        raise CertificateError("the report's decision fields differ from the certified ones")
    return payload
