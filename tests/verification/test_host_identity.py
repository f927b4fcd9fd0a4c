"""Every run records the host that ran it; a re-verification is refused to the host of the original (over the
internal API, with a code the host code tells apart from a dead token) and taken by another."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rest_framework.test import APIClient

from tests.factories.disputes import Host
from verification import host as host_code
from verification.models import VerificationRun
from verification.services import verification_run_repeat_elsewhere

from .conftest import signed

pytestmark = pytest.mark.django_db


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"RunToken {token}")
    return client


def test_the_host_that_verified_is_refused_the_rerun_over_http(
    make_run, dispatched, django_capture_on_commit_callbacks
):
    first, second = Host("host-a"), Host("host-b")
    run, token = make_run(subject="test:rerun")
    claim = {"host_id": first.host_id, "key_id": first.key_id}
    assert _client(token).post(f"/internal/verification/runs/{run.pk}/start/", claim, format="json").status_code == 200
    report, certificate = signed(run, first.key)
    _client(token).post(
        f"/internal/verification/runs/{run.pk}/result/", {"report": report, "certificate": certificate}, format="json"
    )
    run.refresh_from_db()
    assert (run.status, run.host_id, run.host_key_id, run.signing_key.key_id) == (
        "passed",
        "host-a",
        first.key_id,
        first.key_id,
    )
    with django_capture_on_commit_callbacks(execute=True):
        rerun = verification_run_repeat_elsewhere(run_id=run.pk)
    rerun_token = dispatched[-1].token
    url = f"/internal/verification/runs/{rerun.pk}/start/"
    for refused_claim in (claim, {}, {"host_id": "host-a-renamed", "key_id": first.key_id}):
        response = _client(rerun_token).post(url, refused_claim, format="json")
        assert response.status_code == 409 and response.json()["error"]["code"] == "host_excluded"
    started = _client(rerun_token).post(url, {"host_id": second.host_id, "key_id": second.key_id}, format="json")
    assert started.status_code == 200 and started.json()["run_id"] == rerun.pk
    rerun.refresh_from_db()
    assert (rerun.status, rerun.host_id, rerun.declined_count) == ("running", "host-b", 3)


def test_a_result_signed_by_another_key_than_claimed_is_refused(make_run):
    claimed, other = Host("host-a"), Host("host-b")
    run, token = make_run()
    _client(token).post(
        f"/internal/verification/runs/{run.pk}/start/", {"host_id": "host-a", "key_id": claimed.key_id}, format="json"
    )
    report, certificate = signed(run, other.key)
    response = _client(token).post(
        f"/internal/verification/runs/{run.pk}/result/", {"report": report, "certificate": certificate}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "certificate_key_mismatch"
    assert VerificationRun.objects.get(pk=run.pk).status == "running"


class _Refusing(BaseHTTPRequestHandler):
    answer = (409, {"error": {"code": "host_excluded", "message": "", "fields": {}}})
    received: list = []

    def do_POST(self):
        self.received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))
        status, body = self.answer
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, *args):
        pass


@pytest.fixture
def platform():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Refusing.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_host_code_tells_an_exclusion_from_a_dead_token(platform):
    client = host_code.PlatformClient(platform, 7, "vrt_x", {"host_id": "host-a", "key_id": "k1"})
    _Refusing.answer = (409, {"error": {"code": "host_excluded", "message": "", "fields": {}}})
    with pytest.raises(host_code.HostExcluded):
        client.start()
    assert _Refusing.received[-1] == {"host_id": "host-a", "key_id": "k1"}
    _Refusing.answer = (409, {"error": {"code": "illegal_transition", "message": "", "fields": {}}})
    with pytest.raises(host_code.RunRejected):
        client.start()
    _Refusing.answer = (403, {"error": {"code": "run_token_invalid", "message": "", "fields": {}}})
    with pytest.raises(host_code.RunRejected):
        client.start()


def test_host_identity_defaults_to_the_machine_name(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("VERIFICATION_SIGNING_KEY_PATH", str(tmp_path / "key.pem"))
    monkeypatch.delenv("VERIFICATION_HOST_ID", raising=False)
    assert host_code.HostConfig.from_environment().host_id == socket.gethostname()
    monkeypatch.setenv("VERIFICATION_HOST_ID", "gpu-7")
    assert host_code.HostConfig.from_environment().host_id == "gpu-7"


@pytest.fixture
def worker():
    """The hosts' Celery app, imported here: creating it makes it the process's current app, which would send
    the platform's own tasks nowhere for the tests that follow; the platform's app is made current again."""
    from marketplace.celery import app as platform_app
    from verification import worker

    yield worker
    platform_app.set_current()


def test_worker_puts_an_excluded_run_back_for_another_host(monkeypatch, worker):
    from celery.exceptions import Retry

    def excluded(**kwargs):
        raise host_code.HostExcluded("start/")

    monkeypatch.setattr(host_code, "execute_run", excluded)
    retried = []

    def fake_retry(*, exc, countdown, max_retries):
        retried.append((countdown, max_retries))
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(worker.execute_run, "retry", fake_retry)
    worker.execute_run.push_request(retries=20)
    try:
        with pytest.raises(Retry):
            worker.execute_run.run(run_id=1, token="vrt_x", base_url="http://127.0.0.1:9")
    finally:
        worker.execute_run.pop_request()
    assert retried == [(worker.EXCLUDED_RETRY_SECONDS, 21)]  # never runs out of retries while it waits
