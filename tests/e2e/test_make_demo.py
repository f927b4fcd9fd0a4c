"""`make demo` (scripts/demo.py) against `make run`'s own process set: the whole story through the public API, with
its webhook receiver verifying every signed event, ends with exit 0 and a folder holding the report plot and a
certificate that verifies with the service's published key."""

import importlib.util
import json
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests

from notifications.signing import secret_generate, signature_header
from tests.common.test_security_settings import _production
from tests.embedded import embedded_environment
from verification.runner.certificate import CertificateError, load_public_key, verify_certificate

from .conftest import REPO, _free_port, make_run_started

KEY_EVENTS = {
    "job.published",
    "job.calibrated",
    "bid.placed",
    "bid.accepted",
    "contract.funded",
    "submission.received",
    "verification.completed",
    "escrow.released",
    "escrow.refunded",
}


def _demo_module():
    spec = importlib.util.spec_from_file_location("speedproof_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_make_run(tmp_path_factory):
    """Small verification budgets: the story needs a PASS (decided after 13 pairs at the earliest) and a FAIL."""
    with make_run_started(
        tmp_path_factory.mktemp("make-demo-var"), VERIFICATION_BUDGET_PAIRS="24", VERIFICATION_CALIBRATION_PAIRS="3"
    ) as stack:
        yield stack


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_make_demo_tells_the_whole_story_against_make_run(small_make_run, tmp_path):
    stack = small_make_run
    out = tmp_path / "story"
    started = time.monotonic()
    # `-o` keeps make from reinstalling requirements: the suite runs in the environment `make test` installed.
    demo = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.runtime-installed",
            "demo",
            f"SPEEDPROOF_PORT={urlsplit(stack.url).port}",
            f"DEMO_ARGS=--out {out} --timeout 300",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    print(f"make demo took {time.monotonic() - started:.1f} s\n{demo.stdout[-4000:]}")
    assert demo.returncode == 0, demo.stdout[-6000:] + demo.stderr[-3000:]
    assert f"Report plot, certificate and summary: {out}" in demo.stdout
    assert "REJECTED" not in demo.stdout

    summary = json.loads((out / "summary.json").read_text())
    received = {(event["recipient"], event["type"]) for event in summary["webhook_events"] if event["verified"]}
    assert {("company", kind) for kind in KEY_EVENTS} <= received
    assert {("ada", kind) for kind in KEY_EVENTS - {"job.published", "job.calibrated"}} <= received
    assert ("grace", "bid.declined") in received
    assert not any(recipient == "grace" and kind.startswith("escrow.") for recipient, kind in received)
    escrow = summary["escrow"]
    assert escrow["released"] > 0 and escrow["refunded"] > 0
    assert escrow["released"] + escrow["refunded"] + escrow["fee_kept"] == escrow["funded"]

    assert (out / "report-plot.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (out / "report-plot.svg").read_bytes()[:1000]
    certificate = json.loads((out / "certificate.json").read_text())
    report = json.loads((out / "report.json").read_text())
    # The key comes from the service, not from the folder: a certificate that verifies only with its own key is none.
    keys = requests.get(f"{stack.url}/api/v1/verification/keys/", timeout=30).json()
    public_key = load_public_key(
        next(k for k in keys if k["key_id"] == certificate["key_id"])["public_key_pem"].encode()
    )
    assert verify_certificate(certificate, public_key, report=report)["decision"] == "PASS"
    certificate["payload"]["decision"] = "FAIL"
    with pytest.raises(CertificateError):
        verify_certificate(certificate, public_key)

    # The demo removes its endpoints: nothing is left retrying against its closed receiver.
    assert stack.query("SELECT COUNT(*) FROM notifications_webhookendpoint") == [(0,)]
    assert stack.recorder.server_errors == []
    assert "Traceback" not in demo.stderr


def test_the_demo_says_how_to_start_the_service_when_it_is_not_running():
    demo = subprocess.run(
        [sys.executable, "scripts/demo.py", "--url", f"http://127.0.0.1:{_free_port()}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 2
    assert "make run" in demo.stdout


def test_the_demo_receiver_accepts_only_what_the_service_signed():
    demo = _demo_module()
    secret, body, now = secret_generate(), b'{"id": "evt_1", "type": "bid.placed"}', int(time.time())
    header = signature_header(secrets_signing=[secret], timestamp=now, body=body)
    assert demo.signature_valid(header, body, secret)
    # During a rotation the header carries two signatures; either secret verifies.
    rotated = signature_header(secrets_signing=[secret_generate(), secret], timestamp=now, body=body)
    assert demo.signature_valid(rotated, body, secret)
    assert not demo.signature_valid(header, body + b" ", secret)
    assert not demo.signature_valid(header, body, secret_generate())
    stale = signature_header(secrets_signing=[secret], timestamp=now - 301, body=body)
    assert not demo.signature_valid(stale, body, secret)
    assert not demo.signature_valid(f"t={now}", body, secret)
    assert not demo.signature_valid(f"t={now},t={now},{header.split(',')[1]}", body, secret)


def test_the_demo_receiver_keeps_each_verified_event_once_and_refuses_forgeries():
    demo = _demo_module()
    receiver = demo.WebhookReceiver().start()
    try:
        secret = receiver.secrets["company"] = secret_generate()
        body = b'{"id": "evt_2", "type": "escrow.released", "data": {}}'

        def post(header: str, path: str = "/company") -> int:
            return requests.post(
                f"{receiver.base_url}{path}", data=body, headers={"Speedproof-Signature": header}, timeout=10
            ).status_code

        signed = signature_header(secrets_signing=[secret], timestamp=int(time.time()), body=body)
        forged = signature_header(secrets_signing=[secret_generate()], timestamp=int(time.time()), body=body)
        assert [post(signed), post(signed), post(forged), post(signed, "/nobody")] == [200, 200, 400, 400]
        assert receiver.events == [{"recipient": "company", "type": "escrow.released", "id": "evt_2", "verified": True}]
        assert receiver.rejected == ["company", "nobody"]
    finally:
        receiver.stop()


def test_loopback_http_receivers_are_allowed_by_make_runs_defaults_only(tmp_path):
    """The demo's receiver is plain http on loopback: `make run`'s embedded defaults allow it, production never."""
    script = "from django.conf import settings as s; print(s.WEBHOOKS_REQUIRE_HTTPS, s.WEBHOOKS_ALLOW_LOOPBACK)"
    local = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO,
        env=embedded_environment(tmp_path, DJANGO_SETTINGS_MODULE="marketplace.settings.local"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert local.returncode == 0, local.stderr
    assert local.stdout.split("\n")[-2] == "False True"
    production = _production(["shell", "-c", script])
    assert production.returncode == 0, production.stderr
    assert production.stdout.split("\n")[-2] == "True False"
