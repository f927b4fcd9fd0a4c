"""Events written by the jobs services, in their transaction, showing each recipient only what it may see."""

import json

import pytest
from django.db import transaction

from jobs.services.bids import bid_accept, bid_place, bid_withdraw
from jobs.services.contracts import contract_release_earned, contract_settle
from jobs.services.disputes import dispute_open, dispute_rule
from jobs.services.submissions import submission_create
from notifications import services
from notifications.models import OutboundEvent
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory, open_job
from tests.factories.disputes import Host, submit_and_verify, token_of
from tests.factories.jobs import fund, onboard
from tests.jobs.conftest import candidate_upload
from tests.verification.conftest import fake_report
from verification.models import VerificationRun
from verification.runner.certificate import sign_report
from verification.services import verification_record_result, verification_run_heartbeat, verification_run_start

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_webhooks", "queued")]


def _subscribe(user, receiver):
    return services.endpoint_create(actor=user, url=receiver.url, event_types=["*"]).endpoint


def _events(*, user=None, organization=None) -> list[tuple[str, dict]]:
    events = OutboundEvent.objects.filter(user=user, organization=organization).order_by("id")
    return [(event.type, event.data) for event in events]


@pytest.fixture
def market(receiver):
    admin = CompanyAdminFactory()
    winner, rival = EngineerFactory(), EngineerFactory()
    for party in (admin, winner, rival):
        _subscribe(party, receiver)
    organization = admin.memberships.get().organization
    return admin, organization, winner, rival


def test_bids_reach_the_company_and_their_own_engineer_only(market):
    admin, organization, winner, rival = market
    job = open_job(admin=admin)
    winning = bid_place(actor=winner, job=job, amount=123_456, estimated_days=3, proposal="Fuse.")
    losing = bid_place(actor=rival, job=job, amount=98_765, estimated_days=3, proposal="Tile.")
    contract = bid_accept(actor=admin, bid=winning)

    company = _events(organization=organization)
    assert sorted(kind for kind, _ in company) == [
        "bid.accepted",
        "bid.declined",
        "bid.placed",
        "bid.placed",
        "contract.funding_required",
        "job.published",
    ]
    assert {data["amount"] for kind, data in company if kind == "bid.placed"} == {123_456, 98_765}
    assert (
        company[0][0] == "job.published"
        and company[0][1]["id"] == job.pk
        and company[0][1]["hidden_inputs_attached"] is True
    )

    winner_events = _events(user=winner)
    assert [kind for kind, _ in winner_events] == ["bid.placed", "bid.accepted", "contract.funding_required"]
    assert "98765" not in json.dumps(winner_events)  # never a competitor's amount
    assert winner_events[2][1]["id"] == contract.pk

    rival_events = _events(user=rival)
    assert [(kind, data["id"]) for kind, data in rival_events] == [
        ("bid.placed", losing.pk),
        ("bid.declined", losing.pk),
    ]
    assert "123456" not in json.dumps(rival_events)


def test_another_company_receives_nothing(market, receiver):
    admin, _, winner, _ = market
    other_admin = CompanyAdminFactory()
    _subscribe(other_admin, receiver)
    bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="Fuse.")
    assert _events(organization=other_admin.memberships.get().organization) == []


def test_a_rolled_back_change_leaves_no_event(market):
    admin, organization, winner, _ = market
    job = open_job(admin=admin)
    before = OutboundEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="Fuse.")
        raise RuntimeError("the request failed after the bid")
    assert OutboundEvent.objects.count() == before


def test_funding_submission_and_verification_show_the_engineer_no_hidden_input_data(
    market, signing_key, dispatched, django_capture_on_commit_callbacks
):
    admin, organization, winner, _ = market
    job = open_job(admin=admin, max_submissions=1)
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    with django_capture_on_commit_callbacks(execute=True):  # the run is dispatched after commit
        submission = submission_create(actor=winner, contract=contract, upload=candidate_upload())
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run, decision="FAIL", fraction=0.0)
    report["correctness"] = {
        "passed": False,
        "outputs_compared": 8,
        "mismatched_outputs": 1,
        "first_differences": [{"input_id": "h-1", "where": "$[0]", "expected": "0.123456789", "actual": "9.9"}],
    }
    verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))

    for recipient in ({"user": winner}, {"organization": organization}):
        kinds = [kind for kind, _ in _events(**recipient)]
        assert {"contract.funded", "submission.received", "verification.completed"} <= set(kinds)
    [(_, engineer_view)] = [item for item in _events(user=winner) if item[0] == "verification.completed"]
    [(_, company_view)] = [item for item in _events(organization=organization) if item[0] == "verification.completed"]
    assert engineer_view["submission"] == submission.pk and engineer_view["decision"] == "FAIL"
    for hidden in ("0.123456789", "h-1", "secret stderr"):
        assert hidden not in json.dumps(engineer_view)
    assert "0.123456789" in json.dumps(company_view) and "secret stderr" in json.dumps(company_view)

    # The engineer disputes the FAIL: each party's dispute event shows what the API shows it.
    dispute = dispute_open(actor=winner, contract_id=contract.pk, reason="noisy host", evidence_text="see plot")
    [(_, engineer_dispute)] = [item for item in _events(user=winner) if item[0] == "dispute.opened"]
    [(_, company_dispute)] = [item for item in _events(organization=organization) if item[0] == "dispute.opened"]
    assert engineer_dispute["id"] == company_dispute["id"] == dispute.pk
    assert engineer_dispute["original"]["decision"] == "FAIL"
    for hidden in ("0.123456789", "h-1", "secret stderr"):
        assert hidden not in json.dumps(engineer_dispute)
    dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="it fails")

    contract_settle(contract_id=contract.pk, reason="attempts exhausted")  # the only attempt failed
    for recipient in ({"user": winner}, {"organization": organization}):
        [(kind, escrow)] = [item for item in _events(**recipient) if item[0].startswith("escrow.")]
        assert kind == "escrow.refunded" and escrow["id"] == contract.escrow_id


def test_nobody_listening_writes_no_events(signing_key):
    admin = CompanyAdminFactory()
    bid_place(actor=EngineerFactory(), job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x")
    assert not OutboundEvent.objects.exists()


def test_verification_started_and_throttled_progress_reach_both_parties(
    market, signing_key, dispatched, django_capture_on_commit_callbacks, settings
):
    admin, organization, winner, rival = market
    settings.VERIFICATION_PROGRESS_EVENT_SECONDS = 60
    contract = fund(
        bid_accept(
            actor=admin,
            bid=bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x"),
        )
    )
    with django_capture_on_commit_callbacks(execute=True):
        submission = submission_create(actor=winner, contract=contract, upload=candidate_upload())
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    verification_run_start(run_id=run.pk, token=token)
    verification_run_start(run_id=run.pk, token=token)  # a host retrying start/ announces nothing new
    for pairs in (1, 2, 3):  # within one throttle period: one event
        verification_run_heartbeat(run_id=run.pk, token=token, progress={"phase": "measure", "pairs_done": pairs})

    for recipient in ({"user": winner}, {"organization": organization}):
        events = [(kind, data) for kind, data in _events(**recipient) if kind.startswith("verification.")]
        assert [kind for kind, _ in events] == ["verification.started", "verification.progress"]
        assert {data["submission"] for _, data in events} == {submission.pk}
        assert events[1][1]["progress"]["pairs_done"] == 1
    assert not [kind for kind, _ in _events(user=rival) if kind.startswith("verification.")]

    report = fake_report(run, decision="PASS", fraction=1.0)
    verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))
    kinds = [kind for kind, _ in _events(user=winner) if kind.startswith("verification.")]
    assert kinds == ["verification.started", "verification.progress", "verification.completed"]


def test_payouts_and_payout_account_changes_reach_only_their_engineer(market):
    from payments import services as payments_services
    from payments.models import ConnectedAccount
    from payments.providers.base import ConnectedAccountInfo, Payout
    from tests.factories.jobs import onboard

    admin, organization, winner, rival = market
    onboard(winner)
    account = ConnectedAccount.objects.get(user=winner)
    updates = [kind for kind, _ in _events(user=winner) if kind == "payout_account.updated"]
    assert updates  # onboarding completed: transfers became active

    requirement = ConnectedAccountInfo(
        id=account.provider_account_id,
        transfers_active=False,
        details_submitted=True,
        payouts_enabled=False,
        requirements_due=("individual.verification.document",),
    )
    payments_services.connected_account_sync(info=requirement)
    payments_services.connected_account_sync(info=requirement)  # unchanged: no event
    changes = [data for kind, data in _events(user=winner) if kind == "payout_account.updated"]
    assert len(changes) == len(updates) + 1
    assert changes[-1]["requirements_due"] == ["individual.verification.document"]
    assert changes[-1]["onboarding_url"] is None and changes[-1]["dashboard_url"] is None  # no one-time links

    paid = Payout("po_1", account.provider_account_id, "paid", 4200, "usd", None, None)
    payments_services.payout_record(payout=paid)
    payments_services.payout_record(payout=paid)  # a redelivered event: once
    failed = Payout("po_2", account.provider_account_id, "failed", 100, "usd", "account_closed", "Closed.")
    payments_services.payout_record(payout=failed)
    payouts = [(kind, data) for kind, data in _events(user=winner) if kind.startswith("payout.")]
    assert payouts == [
        ("payout.paid", {"id": "po_1", "status": "paid", "amount": 4200, "currency": "usd", "failure_code": None}),
        (
            "payout.failed",
            {"id": "po_2", "status": "failed", "amount": 100, "currency": "usd", "failure_code": "account_closed"},
        ),
    ]
    for others in ({"user": rival}, {"organization": organization}):
        assert not [kind for kind, _ in _events(**others) if kind.startswith("payout")]


def _api(api_client_for, user, path: str) -> dict:
    response = api_client_for(user).get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.json()


def _kinds(prefix: str, **recipient) -> list[str]:
    return [kind for kind, _ in _events(**recipient) if kind.startswith(prefix)]


def test_a_withdrawn_bid_reaches_the_company_and_its_engineer_only(market, receiver, api_client_for):
    admin, organization, winner, rival = market
    other_admin = CompanyAdminFactory()
    _subscribe(other_admin, receiver)
    job = open_job(admin=admin)
    withdrawn = bid_place(actor=winner, job=job, amount=123_456, estimated_days=3, proposal="Fuse.")
    bid_place(actor=rival, job=job, amount=98_765, estimated_days=3, proposal="Tile.")
    bid_withdraw(actor=winner, bid=withdrawn)

    path = f"/api/v1/bids/{withdrawn.pk}/"
    for recipient, viewer in (({"organization": organization}, admin), ({"user": winner}, winner)):
        [data] = [data for kind, data in _events(**recipient) if kind == "bid.withdrawn"]
        assert data == _api(api_client_for, viewer, path)
        assert (data["id"], data["status"], data["amount"]) == (withdrawn.pk, "withdrawn", 123_456)
    # A competitor learns nothing of it: neither the event nor the amount in any event it received.
    assert _kinds("bid.withdrawn", user=rival) == []
    assert "123456" not in json.dumps(_events(user=rival))
    assert _events(organization=other_admin.memberships.get().organization) == []


def test_a_ruling_reaches_both_parties_as_the_dispute_api_shows_each(
    market, receiver, api_client_for, dispatched, django_capture_on_commit_callbacks
):
    admin, organization, winner, rival = market
    other_admin = CompanyAdminFactory()
    _subscribe(other_admin, receiver)
    capture = django_capture_on_commit_callbacks
    onboard(winner)
    job = open_job(admin=admin, review_window_hours=48, max_submissions=3)
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    submit_and_verify(contract, host=Host("host-a"), dispatched=dispatched, capture=capture, fraction=0.5)
    with capture(execute=True):
        dispute = dispute_open(actor=admin, contract_id=contract.pk, reason="outputs look cached")
    rerun = dispute.reverification_run
    with capture(execute=True):
        Host("host-b").finish(rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0)
    assert _kinds("dispute.resolved", user=winner) == _kinds("dispute.resolved", organization=organization) == []
    dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="overturn_withhold", note="the rerun fails")

    path = f"/api/v1/contracts/{contract.pk}/disputes/{dispute.pk}/"
    for recipient, viewer in (({"organization": organization}, admin), ({"user": winner}, winner)):
        [data] = [data for kind, data in _events(**recipient) if kind == "dispute.resolved"]
        assert data == _api(api_client_for, viewer, path)
        assert (data["id"], data["status"], data["ruling"]) == (dispute.pk, "resolved", "overturn_withhold")
        assert (data["original"]["host_id"], data["reverification"]["host_id"]) == ("host-a", "host-b")
    assert "secret stderr" not in json.dumps(_events(user=winner))  # the company's package's logs
    assert _kinds("dispute.", user=rival) == []
    assert _events(organization=other_admin.memberships.get().organization) == []


def test_a_calibration_reaches_the_company_only(
    market, receiver, api_client_for, signing_key, dispatched, django_capture_on_commit_callbacks
):
    admin, organization, winner, rival = market
    with django_capture_on_commit_callbacks(execute=True):  # the calibration run is dispatched after commit
        job = open_job(admin=admin)
    bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x")
    run = VerificationRun.objects.get(subject=f"calibration:job:{job.pk}")
    token = token_of(dispatched, run)
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run)
    report["calibration"] = {
        "criteria": [{"metric": "wall_time", "statistic": "median", "smallest_verifiable_speedup": 1.9}],
        "sandbox_violations": [],
    }
    assert _kinds("job.calibrated", organization=organization) == []
    verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))

    [data] = [data for kind, data in _events(organization=organization) if kind == "job.calibrated"]
    assert data == _api(api_client_for, admin, f"/api/v1/jobs/{job.pk}/")
    assert (data["id"], data["calibration"]["status"], data["calibration"]["run"]) == (job.pk, "done", run.pk)
    assert "inside the noise floor" in data["calibration"]["flags"][0]  # the 1.5x threshold is below 1.9x
    for engineer in (winner, rival):  # they may read the job, but its events are the company's
        assert _kinds("job.", user=engineer) == []


def test_escrow_release_and_refund_reach_both_parties_once(
    market, receiver, api_client_for, dispatched, django_capture_on_commit_callbacks
):
    admin, organization, winner, rival = market
    other_admin = CompanyAdminFactory()
    _subscribe(other_admin, receiver)
    onboard(winner)
    job = open_job(admin=admin, review_window_hours=48, max_submissions=3)
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    submit_and_verify(
        contract, host=Host("host-a"), dispatched=dispatched, capture=django_capture_on_commit_callbacks, fraction=0.5
    )
    assert _kinds("escrow.", user=winner) == []  # earned, but waiting for the company's review window
    contract_release_earned(contract_id=contract.pk, force=True)

    path = f"/api/v1/payments/escrows/{contract.escrow_id}/"
    for recipient, viewer in (({"organization": organization}, admin), ({"user": winner}, winner)):
        [(kind, data)] = [item for item in _events(**recipient) if item[0].startswith("escrow.")]
        assert kind == "escrow.released" and data == _api(api_client_for, viewer, path)
        assert (data["id"], data["state"], data["released"]) == (contract.escrow_id, "partially_released", 50_000)

    contract_settle(contract_id=contract.pk, reason="the company closed it")  # pays nothing more, refunds the rest
    for recipient, viewer in (({"organization": organization}, admin), ({"user": winner}, winner)):
        escrow_events = [item for item in _events(**recipient) if item[0].startswith("escrow.")]
        # The half released before settlement moved no money again: no second escrow.released.
        assert [kind for kind, _ in escrow_events] == ["escrow.released", "escrow.refunded"], recipient
        refunded = escrow_events[1][1]
        assert refunded == _api(api_client_for, viewer, path)
        assert (refunded["state"], refunded["released_bps"]) == ("closed", 5_000)  # the refund is paid after commit
    assert _kinds("escrow.", user=rival) == []
    assert _events(organization=other_admin.memberships.get().organization) == []
