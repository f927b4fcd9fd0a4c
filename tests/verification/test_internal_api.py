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


def _started(make_run):
    run, token = make_run()
    client = _client(token)
    client.post(f"/internal/verification/runs/{run.pk}/start/")
    return run, client


def _without(report: dict, path: str) -> dict:
    *parents, last = path.split(".")
    holder = report
    for name in parents:
        holder = holder[name]
    del holder[last]
    return report


def _replace(report: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    holder = report
    for name in parents:
        holder = holder[int(name)] if isinstance(holder, list) else holder[name]
    holder[int(last) if isinstance(holder, list) else last] = value
    return report


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: _without(r, "criteria"), "report"),
        (lambda r: _without(r, "correctness"), "report"),
        (lambda r: _without(r, "timings.finished_at"), "report.timings"),
        (lambda r: _replace(r, "criteria", "all good"), "report.criteria"),
        (lambda r: _replace(r, "criteria.0", "all good"), "report.criteria[0]"),
        (lambda r: _replace(r, "criteria.0.estimate", "fast"), "report.criteria[0].estimate"),
        (lambda r: _replace(r, "environment", ["x"]), "report.environment"),
        (lambda r: _replace(r, "runs", 3), "report.runs"),
        (lambda r: _replace(r, "tier", {"index": 10**20}), "report.tier.index"),
        (lambda r: _replace(r, "payout_fraction", "all"), "report.payout_fraction"),
        (lambda r: _replace(r, "measurements", [1, 2]), "report.measurements[0]"),
        (lambda r: _replace(r, "decision", {"PASS": True}), "report.decision"),
        (lambda r: _replace(r, "calibration", {"criteria": [{"smallest_verifiable_speedup": "x"}]}), None),
    ],
)
def test_a_signed_but_malformed_report_is_400_and_records_nothing(make_run, signing_key, mutate, field):
    run, client = _started(make_run)
    report, certificate = signed(run, signing_key)
    response = client.post(
        f"/internal/verification/runs/{run.pk}/result/",
        {"report": mutate(report), "certificate": certificate},
        format="json",
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_report"
    if field:
        assert field in error["fields"], error["fields"]
    run.refresh_from_db()
    assert run.status == VerificationRun.Status.RUNNING and run.report in ({}, None)
    # The host can still post its real result.
    report, certificate = signed(run, signing_key)
    ok = client.post(
        f"/internal/verification/runs/{run.pk}/result/", {"report": report, "certificate": certificate}, format="json"
    )
    assert ok.json() == {"status": "passed"}


def test_a_non_dict_certificate_or_report_is_400(make_run, signing_key):
    run, client = _started(make_run)
    for body in ({"report": [], "certificate": {}}, {"report": {}, "certificate": "sig"}, ["report"], "x"):
        response = client.post(f"/internal/verification/runs/{run.pk}/result/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]["code"] in {"validation_failed", "invalid_report"}


DEEP = {"arrays": "[" * 1000 + "]" * 1000, "objects": '{"a":' * 1000 + "1" + "}" * 1000}


@pytest.mark.parametrize("shape", DEEP)
@pytest.mark.parametrize("endpoint", ["result/", "heartbeat/", "failure/"])
def test_deeply_nested_json_to_the_host_api_is_400(make_run, signing_key, endpoint, shape):
    run, client = _started(make_run)
    body = '{"report": %s, "progress": %s}' % (DEEP[shape], DEEP[shape])
    response = client.post(f"/internal/verification/runs/{run.pk}/{endpoint}", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"


def test_a_result_over_the_size_cap_is_json_413(make_run, signing_key, settings):
    run, client = _started(make_run)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    report, certificate = signed(run, signing_key)
    report["logs"] = [{"role": "baseline", "phase": "measure", "stderr": "x" * 8192}]
    response = client.post(
        f"/internal/verification/runs/{run.pk}/result/", {"report": report, "certificate": certificate}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("run_id", ["9223372036854775808", "99999999999999999999"])
def test_out_of_range_run_ids_are_json_404(make_run, run_id):
    _, token = make_run()
    for endpoint in ("start/", "heartbeat/", "result/", "failure/", "artifacts/package/"):
        response = _client(token).post(f"/internal/verification/runs/{run_id}/{endpoint}", {}, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
