"""Email for the moments that need a person: the right people, once, as they chose, and never a secret."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from accounts.services import invite_create
from jobs.services import events
from jobs.services.bids import bid_accept, bid_place
from jobs.services.contracts import contract_dispute_review
from jobs.services.disputes import dispute_answer, dispute_open, dispute_rule
from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_publish
from jobs.services.submissions import submission_create
from jobs.tasks import contracts_remind_review_closing
from notifications import emails, event_types, services
from notifications.models import EmailNotification
from notifications.tasks import email_send
from tests.factories import CompanyAdminFactory, EngineerFactory, open_job
from tests.factories.accounts import CompanyMemberFactory, StaffFactory
from tests.factories.archives import make_tar_gz, package_archive, upload
from tests.factories.disputes import Host, submit_and_verify, token_of
from tests.factories.jobs import JobFactory, fund
from tests.jobs.conftest import candidate_upload
from tests.verification.conftest import fake_report
from verification.models import VerificationRun
from verification.runner.certificate import sign_report
from verification.services import verification_record_result, verification_run_start

pytestmark = pytest.mark.django_db

HIDDEN_CANARY = "HIDDEN-CANARY-7f3a9"


@pytest.fixture(autouse=True)
def locmem(settings, monkeypatch):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    queued: list[int] = []
    monkeypatch.setattr("notifications.tasks.email_send.delay", queued.append)
    return queued


def send_all() -> None:
    """What the worker does with every queued email (the outbox rows are the queue)."""
    for notification_id in EmailNotification.objects.order_by("id").values_list("pk", flat=True):
        email_send(notification_id)


def inbox(user, template: str | None = None) -> list:
    subjects = {kind.template: kind.subject.split("{")[0].strip() for kind in emails.EMAIL_KINDS}  # "New bid on"
    found = [message for message in mail.outbox if user.email in message.to]
    if template:
        found = [message for message in found if subjects[template] in message.subject]
    return found


@pytest.fixture
def market():
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    owner = CompanyAdminFactory(organization=organization, role="owner")
    member = CompanyMemberFactory(organization=organization)
    winner, rival = EngineerFactory(), EngineerFactory()
    return admin, owner, member, winner, rival


def test_bids_email_the_owners_and_admins_and_the_accepted_engineer_only(market):
    admin, owner, member, winner, rival = market
    job = open_job(admin=admin)
    winning = bid_place(actor=winner, job=job, amount=123_456, estimated_days=3, proposal="Fuse.")
    bid_place(actor=rival, job=job, amount=98_765, estimated_days=3, proposal="Tile.")
    contract = bid_accept(actor=admin, bid=winning)
    send_all()

    for person in (admin, owner):
        received = inbox(person, "bid_received")
        assert len(received) == 2
        assert sorted("1234.56 USD" in message.body for message in received) == [False, True]
        assert any("987.65 USD" in message.body for message in received)
        [funding] = inbox(person, "funding_required")
        assert f"Contract {contract.pk}" in funding.body and f"/api/v1/contracts/{contract.pk}/" in funding.body
        assert funding.alternatives and funding.alternatives[0][1] == "text/html"
    assert inbox(member) == []  # a plain member manages nothing
    [accepted] = inbox(winner)
    assert "accepted" in accepted.subject and "1234.56 USD" in accepted.body
    assert inbox(rival) == []  # never another engineer's bid, nor an email for their own losing bid


def test_emails_do_not_need_a_webhook_endpoint(market):
    admin, *_, winner, _ = market
    assert not services.selectors.WebhookEndpoint.objects.exists()
    bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x")
    send_all()
    assert len(inbox(admin, "bid_received")) == 1


def test_sent_after_commit_and_never_for_a_rolled_back_change(market, locmem, django_capture_on_commit_callbacks):
    admin, *_, winner, _ = market
    job = open_job(admin=admin)
    with pytest.raises(RuntimeError), transaction.atomic():
        bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x")
        raise RuntimeError("the request failed after the bid")
    assert not EmailNotification.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x")
    assert sorted(locmem) == sorted(EmailNotification.objects.values_list("pk", flat=True))
    assert mail.outbox == []  # the worker sends, not the request


def test_the_task_twice_sends_once(market):
    admin, *_, winner, _ = market
    bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x")
    notification = EmailNotification.objects.get(user=admin)
    assert email_send(notification.pk) is True
    assert email_send(notification.pk) is False
    assert len(inbox(admin)) == 1
    notification.refresh_from_db()
    assert notification.status == EmailNotification.Status.SENT and notification.sent_at is not None


def test_a_category_switched_off_is_not_sent(market, api_client_for):
    admin, owner, *_, winner, _ = market
    client = api_client_for(admin)
    response = client.get("/api/v1/me/notification-preferences/")
    assert response.status_code == 200 and set(response.json().values()) == {True}
    assert set(response.json()) == set(emails.EMAIL_KINDS[0].category.__class__.values)
    response = client.patch("/api/v1/me/notification-preferences/", {"bid_received": False}, format="json")
    assert response.status_code == 200 and response.json()["bid_received"] is False
    assert response.json()["funding_required"] is True

    job = open_job(admin=admin)
    bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    send_all()
    assert inbox(admin, "bid_received") == [] and len(inbox(admin, "funding_required")) == 1
    assert len(inbox(owner, "bid_received")) == 1  # one person's choice, not the organization's
    assert EmailNotification.objects.get(user=admin, category="bid_received").status == "skipped"


def test_preferences_reject_bad_input_and_strangers(api_client_for):
    engineer = EngineerFactory()
    response = api_client_for(engineer).patch(
        "/api/v1/me/notification-preferences/", {"disputes": "sometimes"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_failed" and "disputes" in response.json()["error"]["fields"]
    assert api_client_for().get("/api/v1/me/notification-preferences/").status_code in (401, 403)


def _active_with_earning(contract, *, due_in: timedelta):
    contract.earned_bps = 5_000
    contract.release_due_at = timezone.now() + due_in
    contract.save(update_fields=["earned_bps", "release_due_at"])
    return contract


def test_review_window_reminder_is_sent_once_to_the_company(market):
    admin, owner, _, winner, _ = market
    job = open_job(admin=admin)
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    later = fund(
        bid_accept(
            actor=admin,
            bid=bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x"),
        )
    )
    _active_with_earning(contract, due_in=timedelta(hours=20))
    _active_with_earning(later, due_in=timedelta(hours=30))
    mail.outbox.clear()

    assert contracts_remind_review_closing() == 2  # the admin and the owner
    assert contracts_remind_review_closing() == 0
    send_all()
    send_all()
    for person in (admin, owner):
        [reminder] = inbox(person, "review_window_closing")
        assert f"contract {contract.pk}" in reminder.body
    assert inbox(winner, "review_window_closing") == []


def _disputed_and_ruled(contract, *, opened_by, answered_by, dispatched, capture) -> None:
    """A verified PASS (or FAIL) disputed, answered, verified again on another host, and ruled on."""
    first, second = Host("host-a"), Host("host-b")
    decision = "PASS" if opened_by == contract.organization.memberships.first().user else "FAIL"
    submit_and_verify(contract, host=first, dispatched=dispatched, capture=capture, decision=decision, fraction=0.5)
    with capture(execute=True):
        dispute = contract_dispute_review(actor=opened_by, contract=contract, reason="looks wrong").disputes.get()
        dispute_answer(actor=answered_by, dispute_id=dispute.pk, text="it is right")
    rerun = dispute.reverification_run
    with capture(execute=True):
        second.finish(rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0)
        dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="the re-run agrees")


def test_disputes_release_and_refund_reach_the_right_party(
    market, signing_key, dispatched, django_capture_on_commit_callbacks
):
    admin, owner, _, winner, rival = market
    job = open_job(admin=admin)
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    _disputed_and_ruled(
        contract, opened_by=admin, answered_by=winner, dispatched=dispatched, capture=django_capture_on_commit_callbacks
    )
    with transaction.atomic():
        contract.refresh_from_db()
        events.escrow_event_emit(event_type=event_types.ESCROW_RELEASED, contract=contract)
        events.escrow_event_emit(event_type=event_types.ESCROW_REFUNDED, contract=contract)
    mail.outbox.clear()
    send_all()
    for person in (admin, owner, winner):
        for template in ("dispute_opened", "dispute_answered", "dispute_reverified", "dispute_resolved"):
            assert len(inbox(person, template)) == 1, (person, template)
    [resolved] = inbox(winner, "dispute_resolved")
    assert "Uphold" in resolved.body and "the re-run agrees" in resolved.body
    [released] = inbox(winner, "payment_released")
    assert "50%" in released.body and f"/api/v1/payments/escrows/{contract.escrow_id}/" in released.body
    assert inbox(admin, "payment_released") == [] and inbox(winner, "refund_issued") == []
    assert len(inbox(admin, "refund_issued")) == 1
    assert inbox(rival) == []


def test_every_email_is_free_of_hidden_inputs_and_secrets(
    market,
    signing_key,
    dispatched,
    api_client_for,
    django_capture_on_commit_callbacks,
    receiver,
    local_webhooks,
    queued,
):
    """Every kind of email, rendered from objects that carry hidden inputs, tokens and secrets."""
    admin, owner, _, winner, rival = market
    organization = admin.memberships.get().organization
    job = JobFactory(organization=organization, created_by=admin, max_submissions=1)
    job_attach_package(actor=admin, job=job, upload=package_archive())
    job_attach_hidden_inputs(
        actor=admin, job=job, upload=upload(make_tar_gz({"in-0.json": f'{{"x": "{HIDDEN_CANARY}"}}'.encode()}))
    )
    job = job_publish(actor=admin, job=job)
    secrets = [HIDDEN_CANARY, "0.123456789", "secret stderr"]
    endpoints = []
    for person in (admin, winner):
        issued = services.endpoint_create(actor=person, url=receiver.url, event_types=["*"])
        secrets.append(issued.secret)
        endpoints.append(issued.endpoint)
        api_client_for(person)  # issues an API token
    contract = fund(
        bid_accept(actor=admin, bid=bid_place(actor=winner, job=job, amount=100_000, estimated_days=3, proposal="x"))
    )
    with django_capture_on_commit_callbacks(execute=True):  # the run is dispatched after commit
        submission = submission_create(actor=winner, contract=contract, upload=candidate_upload())
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    secrets.append(token)
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run, decision="FAIL", fraction=0.0)
    report["correctness"] = {
        "passed": False,
        "outputs_compared": 8,
        "mismatched_outputs": 1,
        "first_differences": [{"input_id": "h-1", "where": "$[0]", "expected": "0.123456789", "actual": "9.9"}],
    }
    verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))
    contract.refresh_from_db()
    # The engineer disputes the FAIL (its evidence text quotes nothing secret); it is re-run and ruled on.
    with django_capture_on_commit_callbacks(execute=True):
        dispute = dispute_open(actor=winner, contract_id=contract.pk, reason="noisy host", evidence_text="see plot")
        dispute_answer(actor=admin, dispute_id=dispute.pk, text="the outputs differ")
    rerun = dispute.reverification_run
    with django_capture_on_commit_callbacks(execute=True):
        Host("host-b").finish(rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0)
        dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="both hosts agree")
    _active_with_earning(contract, due_in=timedelta(hours=20))
    with transaction.atomic():
        contract.refresh_from_db()
        events.escrow_event_emit(event_type=event_types.ESCROW_RELEASED, contract=contract)
        events.escrow_event_emit(event_type=event_types.ESCROW_REFUNDED, contract=contract)
    contract.review_disputed = False
    contract.save(update_fields=["review_disputed"])
    contracts_remind_review_closing()
    invite = invite_create(actor=owner, organization=organization, email="invitee@example.test", role="member")
    # The organization's endpoint has failed for days and is disabled.
    type(endpoints[0]).objects.filter(pk=endpoints[0].pk).update(enabled=False, disabled_at=timezone.now())
    services.endpoint_disabled_notify(endpoint_id=endpoints[0].pk)
    send_all()

    assert set(EmailNotification.objects.values_list("template", flat=True)) == set(emails.KINDS_BY_TEMPLATE)
    [verified] = inbox(winner, "verification_completed")
    assert "FAILED" in verified.body and f"/api/v1/submissions/{submission.pk}/verification/" in verified.body
    assert len(inbox(admin, "verification_completed")) == 1
    assert len(mail.outbox) >= len(emails.EMAIL_KINDS)
    for message in mail.outbox:
        rendered = " ".join([message.subject, message.body, *(content for content, _ in message.alternatives)])
        for secret in secrets:
            assert secret not in rendered, (message.subject, secret)
        # The invite token is the invitee's own secret: in their email, and in no one else's.
        assert (invite.token in rendered) == (message.to == ["invitee@example.test"]), message.subject


def test_the_sweep_requeues_emails_whose_send_was_lost(market, locmem, settings):
    admin, *_, winner, _ = market
    bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x")
    notification = EmailNotification.objects.get(user=admin)
    assert emails.emails_enqueue_stale() == 0  # fresh: its own message may still be on the way
    now = timezone.now()
    EmailNotification.objects.filter(pk=notification.pk).update(updated_at=now - timedelta(minutes=6))
    locmem.clear()
    assert emails.emails_enqueue_stale() == 1 and locmem == [notification.pk]
    send_all()
    assert len(inbox(admin)) == 1
    assert emails.emails_enqueue_stale() == 0  # sent: never again


def test_the_sweep_revives_a_send_that_died_midway_and_leaves_old_emails(market, locmem):
    admin, *_, winner, _ = market
    bid_place(actor=winner, job=open_job(admin=admin), amount=100_000, estimated_days=3, proposal="x")
    notification = EmailNotification.objects.get(user=admin)
    now = timezone.now()
    EmailNotification.objects.filter(pk=notification.pk).update(
        status=EmailNotification.Status.SENDING, updated_at=now - timedelta(minutes=5)
    )
    assert emails.emails_enqueue_stale() == 0  # maybe still sending
    EmailNotification.objects.filter(pk=notification.pk).update(updated_at=now - timedelta(minutes=20))
    emails.emails_enqueue_stale()  # back to pending now, queued once its grace has passed too
    notification.refresh_from_db()
    assert notification.status == EmailNotification.Status.PENDING
    EmailNotification.objects.filter(pk=notification.pk).update(updated_at=now - timedelta(minutes=20))
    locmem.clear()
    assert emails.emails_enqueue_stale() == 1 and locmem == [notification.pk]

    EmailNotification.objects.filter(pk=notification.pk).update(created_at=now - timedelta(days=4))
    locmem.clear()
    assert emails.emails_enqueue_stale() == 0 and locmem == []
