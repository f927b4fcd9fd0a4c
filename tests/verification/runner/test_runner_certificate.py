"""Certificates verify with only the public key and fail after any change."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from runner_testlib import REPO

from verification.runner import certificate

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox


def _report() -> dict:
    return {
        "runner_version": "1.0.0",
        "decision": "PASS",
        "reason": "all criteria passed after 4 pairs",
        "payout_fraction": 1.0,
        "tier": {"speedup": 2.0, "fraction": 1.0},
        "criteria_spec": {
            "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}],
            "correctness": {"mode": "exact"},
            "tiers": [],
        },
        "criteria": [
            {
                "label": "wall_time median speedup >= 1.5x",
                "decision": "PASS",
                "estimate": 11.2,
                "interval": [9.9, 12.3],
                "p_value_pass": 1.2e-5,
                "p_value_fail": 0.99999,
                "self_reported": False,
                "looks": [],
            }
        ],
        "correctness": {"passed": True, "outputs_compared": 25},
        "runs": {"pairs": 4, "total": 8, "looks": [4]},
        "sha256": {"package": "a" * 64, "candidate": "b" * 64, "hidden_inputs": "c" * 64},
        "settings": {"seed": 1, "alpha_per_side": 0.05, "budget_pairs": 12},
        "timings": {"finished_at": "2026-11-28T23:00:00+00:00"},
        "environment": {"cpu_model": "AMD EPYC", "cpu_count": 2, "kernel": "6.18", "gpu": None},
    }


def _mutations():
    yield "decision", lambda r: r.update(decision="FAIL")
    yield "tier", lambda r: r["tier"].update(fraction=0.5)
    yield "payout", lambda r: r.update(payout_fraction=0.5)
    yield "estimate", lambda r: r["criteria"][0].update(estimate=11.3)
    yield "interval", lambda r: r["criteria"][0]["interval"].__setitem__(0, 9.8)
    yield "candidate hash", lambda r: r["sha256"].update(candidate="d" * 64)
    yield "hidden inputs hash", lambda r: r["sha256"].update(hidden_inputs="e" * 64)
    yield "criteria", lambda r: r["criteria_spec"]["criteria"][0].update(threshold=1.2)
    yield "runs", lambda r: r["runs"].update(pairs=5)
    yield "correctness", lambda r: r["correctness"].update(passed=False)
    yield "time", lambda r: r["timings"].update(finished_at="2026-11-29T00:00:00+00:00")


def test_certificate_verifies_with_only_the_public_key():
    key = certificate.generate_signing_key()
    cert = certificate.sign_report(_report(), key)
    public = certificate.load_public_key(certificate.public_key_pem(key))
    payload = certificate.verify_certificate(json.loads(json.dumps(cert)), public)
    assert payload["decision"] == "PASS"
    assert cert["key_id"] == certificate.key_id(public)
    certificate.verify_certificate(cert, public, report=_report())


@pytest.mark.parametrize(("name", "mutate"), list(_mutations()), ids=[n for n, _ in _mutations()])
def test_any_change_to_the_certified_payload_breaks_the_signature(name, mutate):
    key = certificate.generate_signing_key()
    cert = certificate.sign_report(_report(), key)
    tampered = copy.deepcopy(cert)
    report = copy.deepcopy(_report())
    mutate(report)
    tampered["payload"] = certificate.decision_fields(report)
    with pytest.raises(certificate.CertificateError, match="signature"):
        certificate.verify_certificate(tampered, key.public_key())
    # An untouched certificate does not vouch for a changed report either.
    with pytest.raises(certificate.CertificateError, match="differ"):
        certificate.verify_certificate(cert, key.public_key(), report=report)


def test_signature_bytes_and_keys_are_checked():
    key, other = certificate.generate_signing_key(), certificate.generate_signing_key()
    cert = certificate.sign_report(_report(), key)
    with pytest.raises(certificate.CertificateError, match="different key"):
        certificate.verify_certificate(cert, other.public_key())
    flipped = copy.deepcopy(cert)
    signature = bytearray(__import__("base64").b64decode(flipped["signature"]))
    signature[0] ^= 1
    flipped["signature"] = __import__("base64").b64encode(bytes(signature)).decode()
    with pytest.raises(certificate.CertificateError):
        certificate.verify_certificate(flipped, key.public_key())


def test_verify_certificate_command_line(tmp_path):
    key = certificate.generate_signing_key()
    (tmp_path / "key.pub").write_bytes(certificate.public_key_pem(key))
    cert = certificate.sign_report(_report(), key)
    (tmp_path / "cert.json").write_text(json.dumps(cert))
    tampered = copy.deepcopy(cert)
    tampered["payload"]["decision"] = "FAIL"
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))

    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "verification.runner",
                "verify-certificate",
                str(tmp_path / name),
                "--public-key",
                str(tmp_path / "key.pub"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )

    good, bad = run("cert.json"), run("tampered.json")
    assert (good.returncode, bad.returncode) == (0, 1)
    assert good.stdout.startswith("VALID") and bad.stdout.startswith("INVALID")
