"""Operator actions: roles checked in the services, every action confirmed with a note that the audit log keeps."""

import pytest
from django.contrib.admin import site
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.urls import reverse

from common.errors import NotPermitted
from common.models import AuditEvent
from jobs.models import Contract
from jobs.services import contracts as contract_services
from jobs.services.jobs import jobs_expire_by_operator
from payments.models import Escrow, LedgerEntry
from tests.factories import open_job
from verification.models import SigningKey
from verification.services import signing_key_retire, verification_watchdog_by_operator

from .conftest import operator_with_role, operators

pytestmark = pytest.mark.django_db

CONTRACTS = reverse("admin:jobs_contract_changelist")


@pytest.fixture
def roles():
    return operators()


def _actions(client, url) -> str:
    return client.get(url).content.decode()


def test_support_is_refused_money_actions_by_the_services(disputed, roles):
    contract = disputed.contract
    with pytest.raises(NotPermitted) as refused:
        contract_services.contract_dispute_resolve(actor=roles.support, contract_id=contract.pk, release=True, note="x")
    assert refused.value.code == "operator_role_required"
    key = SigningKey.objects.get()
    with pytest.raises(NotPermitted):
        signing_key_retire(actor=roles.support, key_id=key.key_id)
    contract.refresh_from_db()
    key.refresh_from_db()
    assert contract.review_disputed and key.active


def test_support_may_rerun_verifications_and_expire_jobs_and_an_operator_without_a_role_may_not(roles):
    assert verification_watchdog_by_operator(actor=roles.support) == []
    job = open_job()
    assert jobs_expire_by_operator(actor=roles.support, job_ids=[job.pk]) == 0  # not overdue: left alone
    nobody = operator_with_role(None, email="norole@example.test")
    for refused_call in (
        lambda: verification_watchdog_by_operator(actor=nobody),
        lambda: jobs_expire_by_operator(actor=nobody, job_ids=[job.pk]),
        lambda: jobs_expire_by_operator(actor=job.created_by, job_ids=[job.pk]),
    ):
        with pytest.raises(NotPermitted):
            refused_call()


def test_support_sees_no_money_action_and_a_forged_post_moves_nothing(client, disputed, roles):
    contract = disputed.contract
    client.force_login(roles.support)
    changelist = _actions(client, CONTRACTS)
    assert 'value="dispute_release"' not in changelist and 'value="dispute_withhold"' not in changelist
    assert 'value="retire"' not in _actions(client, reverse("admin:verification_signingkey_changelist"))
    assert 'value="run_watchdog"' in _actions(client, reverse("admin:verification_verificationrun_changelist"))
    forged = {"action": "dispute_release", "_selected_action": [contract.pk], "confirm": "Confirm", "note": "forged"}
    response = client.post(CONTRACTS, forged, follow=True)
    assert response.status_code == 200
    contract.refresh_from_db()
    assert contract.review_disputed
    assert not AuditEvent.objects.filter(verb="operator_action").exists()
    assert not AuditEvent.objects.filter(verb="contract_dispute_resolved").exists()
    client.force_login(roles.payments)
    changelist = _actions(client, CONTRACTS)
    assert 'value="dispute_release"' in changelist and 'value="dispute_withhold"' in changelist
    assert 'value="retire"' in _actions(client, reverse("admin:verification_signingkey_changelist"))


def test_the_service_refuses_support_even_when_the_admin_would_let_the_action_through(disputed, roles):
    """The admin hides the action; the service is what refuses it (a 403), whatever the admin shows."""
    contract_admin = site._registry[Contract]
    request = RequestFactory().post(CONTRACTS, {"confirm": "Confirm", "note": "forged past the admin"})
    request.user = roles.support
    request.session = {}
    request._messages = FallbackStorage(request)
    with pytest.raises(PermissionDenied):
        contract_admin.dispute_release(request, Contract.objects.filter(pk=disputed.contract.pk))
    disputed.contract.refresh_from_db()
    assert disputed.contract.review_disputed
    assert not AuditEvent.objects.filter(verb="operator_action").exists()


def test_a_ruling_needs_a_note_and_records_it(client, disputed, roles, settle):
    contract = disputed.contract
    client.force_login(roles.payments)
    selected = {"action": "dispute_release", "_selected_action": [contract.pk]}

    confirmation = client.post(CONTRACTS, selected)  # as the story page's button posts it
    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    assert 'name="note"' in page and str(contract) in page and "released to the engineer" in page
    contract.refresh_from_db()
    assert contract.review_disputed

    without_note = client.post(CONTRACTS, {**selected, "confirm": "Confirm", "note": "  "})
    assert without_note.status_code == 200 and "Write a note before confirming" in without_note.content.decode()
    contract.refresh_from_db()
    assert contract.review_disputed

    ledger_before = LedgerEntry.objects.filter(escrow_id=contract.escrow_id).count()
    response = settle(client.post, CONTRACTS, {**selected, "confirm": "Confirm", "note": "outputs differ per run"})
    assert response.status_code == 302
    contract.refresh_from_db()
    assert not contract.review_disputed
    assert Escrow.objects.get(pk=contract.escrow_id).released_bps == 5_000
    assert LedgerEntry.objects.filter(escrow_id=contract.escrow_id).count() > ledger_before
    ruling = AuditEvent.objects.get(verb="contract_dispute_resolved", object_id=str(contract.pk))
    assert ruling.actor == roles.payments and ruling.data["note"] == "outputs differ per run"
    action = AuditEvent.objects.get(verb="operator_action", object_type="jobs.contract", object_id=str(contract.pk))
    assert action.actor == roles.payments
    assert action.data["action"] == "dispute_release" and action.data["note"] == "outputs differ per run"
    story = client.get(reverse("admin:jobs_contract_change", args=[contract.pk])).content.decode()
    assert "outputs differ per run" in story and "No open dispute." in story

    # Posted again (a double click): nothing is left to rule on, and nothing moves twice.
    settle(client.post, CONTRACTS, {**selected, "confirm": "Confirm", "note": "again"})
    assert AuditEvent.objects.filter(verb="contract_dispute_resolved").count() == 1
    assert Escrow.objects.get(pk=contract.escrow_id).released_bps == 5_000


def test_retiring_a_key_and_running_the_watchdog_are_confirmed_with_a_note(client, roles, signing_key):
    key = SigningKey.objects.get()
    keys = reverse("admin:verification_signingkey_changelist")
    client.force_login(roles.payments)
    selected = {"action": "retire", "_selected_action": [key.pk]}
    assert client.post(keys, {**selected, "index": 0}).status_code == 200
    key.refresh_from_db()
    assert key.active
    assert client.post(keys, {**selected, "confirm": "Confirm", "note": "host compromised"}).status_code == 302
    key.refresh_from_db()
    assert not key.active
    event = AuditEvent.objects.get(verb="operator_action", object_type="verification.signingkey")
    assert (event.actor, event.data["note"]) == (roles.payments, "host compromised")
