"""The run-token channel: everything a host needs for its run, nothing for any other run."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from verification.models import VerificationRun

from .conftest import signed

pytestmark = pytest.mark.django_db


def _client(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"RunToken {token}")
    return client


def test_host_flow_over_http(make_run, signing_key):
    run, token = make_run()
    client = _client(token)
    spec = client.post(f"/internal/verification/runs/{run.pk}/start/").json()
    assert spec["criteria"] == run.criteria and set(spec["artifacts"]) == {"package", "candidate", "hidden_inputs"}
    download = client.get(f"/internal/verification/runs/{run.pk}/artifacts/hidden_inputs/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == run.hidden_inputs.file.open("rb").read()
    assert client.post(
        f"/internal/verification/runs/{run.pk}/heartbeat/", {"progress": {"runs_done": 1}}, format="json"
    ).json() == {"ok": True}
    report, certificate = signed(run, signing_key)
    response = client.post(
        f"/internal/verification/runs/{run.pk}/result/", {"report": report, "certificate": certificate}, format="json"
    )
    assert response.json() == {"status": "passed"}


@pytest.mark.parametrize("case", ["missing", "guessed", "other_run", "expired", "wrong_scheme", "after_result"])
def test_bad_tokens_get_one_403_that_leaks_nothing(make_run, signing_key, case):
    run, token = make_run(subject="test:1")
    other, other_token = make_run(subject="test:2")
    _client(token).post(f"/internal/verification/runs/{run.pk}/start/")
    presented = {
        "missing": None,
        "guessed": "vrt_" + "A" * 43,
        "other_run": other_token,
        "expired": token,
        "wrong_scheme": token,
        "after_result": token,
    }[case]
    client = _client(presented)
    if case == "wrong_scheme":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    if case == "expired":
        VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=timezone.now())
    if case == "after_result":
        report, certificate = signed(run, signing_key)
        client.post(
            f"/internal/verification/runs/{run.pk}/result/",
            {"report": report, "certificate": certificate},
            format="json",
        )
    for method, path in [
        ("post", "start/"),
        ("get", "artifacts/hidden_inputs/"),
        ("post", "heartbeat/"),
        ("post", "failure/"),
    ]:
        response = getattr(client, method)(
            f"/internal/verification/runs/{run.pk}/{path}", {"reason": "x"}, format="json"
        )
        assert response.status_code == 403, (path, response.status_code)
        body = response.json()
        assert body["error"]["code"] == "run_token_invalid"
        assert run.hidden_inputs.sha256 not in response.content.decode()
        assert "criteria" not in body


def test_a_queued_run_serves_its_files_to_its_current_token_only(
    make_run, dispatched, django_capture_on_commit_callbacks
):
    from verification.services import verification_run_report_failure, verification_run_start

    run, token = make_run()
    # Before start/ (a host fetches while it starts the run): served, and the message named them.
    download = _client(token).get(f"/internal/verification/runs/{run.pk}/artifacts/package/")
    assert download.status_code == 200
    assert dispatched[-1].artifacts["package"]["sha256"] == run.package.sha256
    assert "url" not in dispatched[-1].artifacts["package"]  # the host builds it from its own base URL
    # Hidden inputs only once the run is started (start/ is audited).
    assert _client(token).get(f"/internal/verification/runs/{run.pk}/artifacts/hidden_inputs/").status_code == 404
    # Requeued: the old token fetches nothing, the new message's token does.
    verification_run_start(run_id=run.pk, token=token)
    with django_capture_on_commit_callbacks(execute=True):
        verification_run_report_failure(run_id=run.pk, token=token, reason="host lost")
    assert _client(token).get(f"/internal/verification/runs/{run.pk}/artifacts/package/").status_code == 403
    assert (
        _client(dispatched[-1].token).get(f"/internal/verification/runs/{run.pk}/artifacts/package/").status_code == 200
    )


def test_public_keys_are_listed_with_ids(client, signing_key):
    from verification.runner.certificate import key_id

    keys = client.get("/api/v1/verification/keys/").json()
    assert [key["key_id"] for key in keys] == [key_id(signing_key.public_key())]
    assert "PRIVATE" not in str(keys)


MALFORMED = {"result/": {}, "heartbeat/": {"progress": "not an object"}, "failure/": {}}


@pytest.mark.parametrize("case", ["missing", "wrong", "expired"])
def test_a_bad_token_is_refused_before_the_body_is_read(make_run, case):
    """Without a valid token the answer is the one 403, whatever the body: never a 400 that tells
    a caller the run exists and what its endpoints expect."""
    run, token = make_run()
    _client(token).post(f"/internal/verification/runs/{run.pk}/start/")
    if case == "expired":
        VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=timezone.now())
    client = _client({"missing": None, "wrong": "vrt_" + "A" * 43, "expired": token}[case])
    refused = _client(None).post(f"/internal/verification/runs/{run.pk}/start/").json()
    for path, body in MALFORMED.items():
        for sent in (body, "{not json"):
            url = f"/internal/verification/runs/{run.pk}/{path}"
            response = (
                client.post(url, body, format="json")
                if isinstance(sent, dict)
                else client.post(url, sent, content_type="application/json")
            )
            assert (response.status_code, response.json()) == (403, refused), (path, sent)
    run.refresh_from_db()
    assert (run.status, run.infrastructure_failures) == (VerificationRun.Status.RUNNING, 0)


def test_a_valid_token_with_a_malformed_body_gets_a_validation_error(make_run):
    run, token = make_run()
    client = _client(token)
    client.post(f"/internal/verification/runs/{run.pk}/start/")
    for path, body in MALFORMED.items():
        response = client.post(f"/internal/verification/runs/{run.pk}/{path}", body, format="json")
        assert response.status_code == 400, (path, response.status_code)
    run.refresh_from_db()
    assert (run.status, run.infrastructure_failures) == (VerificationRun.Status.RUNNING, 0)


def test_a_calibration_is_told_the_budget_its_job_will_be_verified_with(make_run, settings):
    settings.VERIFICATION_BUDGET_PAIRS = 24
    run, token = make_run(kind=VerificationRun.Kind.CALIBRATION)
    spec = _client(token).post(f"/internal/verification/runs/{run.pk}/start/").json()
    assert (spec["budget_pairs"], spec["verification_budget_pairs"]) == (run.budget_pairs, 24)
