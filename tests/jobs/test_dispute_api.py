"""The disputes API: opening with evidence files (checked, capped, served only to the parties as downloads), the
side-by-side detail, the one answer, and the older `dispute` action kept as an alias."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Dispute
from tests.admin.conftest import _measurements
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory, funded_contract
from tests.factories.disputes import Host, submit_and_verify, token_of
from tests.factories.jobs import onboard
from verification.services import verification_plot_render

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def passed_contract(dispatched, django_capture_on_commit_callbacks):
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    host = Host("host-a")
    run = submit_and_verify(
        contract, host=host, dispatched=dispatched, capture=django_capture_on_commit_callbacks, fraction=0.5
    )
    return contract, run


def _file(name: str, content: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def _open(client, contract, **extra):
    body = {"reason": "outputs look cached", "evidence_text": "the timings are flat", **extra}
    return client.post(f"/api/v1/contracts/{contract.pk}/disputes/", body, format="multipart")


def test_company_opens_with_files_and_both_parties_see_the_side_by_side(
    passed_contract, api_client_for, django_capture_on_commit_callbacks, dispatched
):
    contract, run = passed_contract
    admin = contract.job.created_by
    with django_capture_on_commit_callbacks(execute=True):
        response = _open(
            api_client_for(admin),
            contract,
            files=[_file("../../report.pdf", PDF, "text/html"), _file("notes.txt", b"flat timings\n")],
        )
    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["side"], created["status"], created["disputed_run"]) == ("company", "reverifying", run.pk)
    assert [(e["filename"], e["content_type"]) for e in created["evidence"]] == [
        ("report.pdf", "application/pdf"),
        ("notes.txt", "text/plain"),
    ]
    assert created["original"]["host_id"] == "host-a" and created["original"]["certificate"]["verified"] is True
    assert created["original"]["speedup_interval"] == pytest.approx([2.2 * 0.9, 2.2 * 1.1])
    assert created["reverification"]["state"] == "queued"
    dispute_url = f"/api/v1/contracts/{contract.pk}/disputes/{created['id']}/"
    rerun = Dispute.objects.get(pk=created["id"]).reverification_run
    with django_capture_on_commit_callbacks(execute=True):
        Host("host-b").finish(rerun, token_of(dispatched, rerun), fraction=0.5)
    for viewer in (admin, contract.engineer, StaffFactory()):
        detail = api_client_for(viewer).get(dispute_url).json()
        assert detail["recommendation"] == "agree"
        assert (detail["original"]["host_id"], detail["reverification"]["host_id"]) == ("host-a", "host-b")
        assert detail["reverification"]["certificate"]["verified"] is True
    listed = api_client_for(contract.engineer).get(f"/api/v1/contracts/{contract.pk}/disputes/").json()
    assert [item["id"] for item in listed["results"]] == [created["id"]]
    download = api_client_for(contract.engineer).get(created["evidence"][0]["url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "application/octet-stream"
    assert download["X-Content-Type-Options"] == "nosniff" and "attachment" in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == PDF


def test_non_parties_learn_nothing(passed_contract, api_client_for, django_capture_on_commit_callbacks):
    contract, _ = passed_contract
    with django_capture_on_commit_callbacks(execute=True):
        created = _open(api_client_for(contract.job.created_by), contract, files=[_file("a.txt", b"secret")]).json()
    for outsider in (EngineerFactory(), CompanyAdminFactory()):
        client = api_client_for(outsider)
        base = f"/api/v1/contracts/{contract.pk}/disputes/"
        assert client.get(base).status_code == 404
        assert client.get(f"{base}{created['id']}/").status_code == 404
        assert client.get(created["evidence"][0]["url"]).status_code == 404
        assert _open(client, contract).status_code == 404


@pytest.mark.parametrize(
    ("upload", "code"),
    [
        (lambda: _file("big.txt", b"a" * 2048), "evidence_too_large"),
        (lambda: _file("run.sh", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64), "evidence_type_not_allowed"),
        (lambda: _file("empty.txt", b""), "evidence_empty"),
    ],
)
def test_evidence_files_are_checked(passed_contract, api_client_for, settings, upload, code):
    settings.DISPUTE_EVIDENCE_MAX_BYTES = 1024
    contract, _ = passed_contract
    response = _open(api_client_for(contract.job.created_by), contract, files=[upload()])
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert not Dispute.objects.exists()


def test_too_many_files_are_refused(passed_contract, api_client_for, settings):
    settings.DISPUTE_EVIDENCE_MAX_FILES = 1
    contract, _ = passed_contract
    files = [_file("a.txt", b"a"), _file("b.txt", b"b")]
    response = _open(api_client_for(contract.job.created_by), contract, files=files)
    assert response.json()["error"]["code"] == "evidence_too_many_files"


def test_the_other_party_answers_once_over_the_api(passed_contract, api_client_for, django_capture_on_commit_callbacks):
    contract, _ = passed_contract
    with django_capture_on_commit_callbacks(execute=True):
        created = _open(api_client_for(contract.job.created_by), contract).json()
    answer_url = f"/api/v1/contracts/{contract.pk}/disputes/{created['id']}/answer/"
    engineer = api_client_for(contract.engineer)
    with django_capture_on_commit_callbacks(execute=True):
        answered = engineer.post(
            answer_url,
            {"answer_text": "not cached", "files": [_file("plot.png", b"\x89PNG\r\n\x1a\n" + b"0" * 32)]},
            format="multipart",
        )
    assert answered.status_code == 200, answered.json()
    body = answered.json()
    assert body["answer_text"] == "not cached"
    assert [(e["side"], e["content_type"]) for e in body["evidence"]] == [("engineer", "image/png")]
    again = engineer.post(answer_url, {"answer_text": "more"}, format="multipart")
    assert again.status_code == 409 and again.json()["error"]["code"] == "dispute_already_answered"
    own = api_client_for(contract.job.created_by).post(answer_url, {"answer_text": "me too"}, format="json")
    assert own.status_code == 403


def test_an_engineer_with_no_fail_to_dispute_gets_a_404_with_a_code(passed_contract, api_client_for):
    contract, _ = passed_contract
    response = api_client_for(contract.engineer).post(
        f"/api/v1/contracts/{contract.pk}/disputes/", {"reason": "x"}, format="json"
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"  # no FAIL to dispute


def test_the_older_dispute_action_opens_a_dispute(passed_contract, api_client_for, django_capture_on_commit_callbacks):
    contract, run = passed_contract
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(contract.job.created_by).post(
            f"/api/v1/contracts/{contract.pk}/dispute/", {"reason": "cached"}, format="json"
        )
    assert response.status_code == 200 and response.json()["review_disputed"] is True
    assert Dispute.objects.get(contract=contract).disputed_run_id == run.pk
    again = api_client_for(contract.job.created_by).post(
        f"/api/v1/contracts/{contract.pk}/dispute/", {"reason": "cached"}, format="json"
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "dispute_already_open"


def test_text_sniffing_refuses_binary_that_claims_to_be_text():
    from jobs.services.dispute_evidence import _sniff

    assert _sniff(b"plain words\n") == "text/plain"
    assert _sniff(b"MZ\x90\x00\x03\x00\x00\x00") is None
    assert _sniff("caf\u00e9".encode()[:4]) == "text/plain"  # a character cut at the end of the sample
    assert _sniff(io.BytesIO(b"\xff\xfe\xfd\xfc" * 8).read()) is None


def test_both_parties_fetch_both_runs_plots_and_outsiders_get_none(
    api_client_for, dispatched, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    original = submit_and_verify(
        contract, host=Host("host-a"), dispatched=dispatched, capture=capture, measurements=_measurements(12, 6)
    )
    admin = contract.job.created_by
    with capture(execute=True):
        created = _open(api_client_for(admin), contract).json()
    rerun = Dispute.objects.get(pk=created["id"]).reverification_run
    with capture(execute=True):
        Host("host-b").finish(
            rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0, measurements=_measurements(12, 11)
        )
    for run_id in (original.pk, rerun.pk):  # what the task queued after the results commit
        verification_plot_render(run_id=run_id)

    dispute_url = f"/api/v1/contracts/{contract.pk}/disputes/{created['id']}/"
    urls = set()
    for party in (admin, contract.engineer):
        client = api_client_for(party)
        detail = client.get(dispute_url).json()
        sides = (detail["original"], detail["reverification"])
        assert [side["run"] for side in sides] == [original.pk, rerun.pk]
        party_urls = [side["plot_png_url"] for side in sides]
        assert all(party_urls) and len(set(party_urls)) == 2, party_urls
        for url in party_urls:
            response = client.get(url)
            assert response.status_code == 200 and response["Content-Type"] == "image/png", (party, url)
            assert b"".join(response.streaming_content).startswith(b"\x89PNG\r\n\x1a\n")
        urls.update(party_urls)
    assert len(urls) == 2  # both parties are shown the same two plots

    for outsider in (EngineerFactory(), CompanyAdminFactory()):
        client = api_client_for(outsider)
        assert client.get(dispute_url).status_code == 404
        for url in urls:
            assert client.get(url).status_code in (403, 404), (outsider, url)
    assert all(api_client_for().get(url).status_code == 401 for url in urls)
