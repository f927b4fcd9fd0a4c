"""The lists operators work from: each filter shows what needs attention and leaves out what does not."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Contract
from notifications.models import Delivery
from payments.models import Escrow, ReconciliationIssue
from tests.factories import awarded_contract
from verification.models import VerificationRun

from .conftest import build_admin_data, operator_with_role, operators

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(client):
    client.force_login(operators().support)
    return client


def _rows(client, name: str, **params) -> str:
    response = client.get(reverse(f"admin:{name}_changelist"), params)
    assert response.status_code == 200
    return response.content.decode()


def _row_ids(page: str, model: str) -> set[int]:
    return {int(pk) for pk in re.findall(rf'href="/admin/{model}/(\d+)/change/', page)}


def test_contracts_awaiting_funding_too_long(support, settings):
    settings.OPERATOR_FUNDING_OVERDUE_HOURS = 48
    overdue, fresh = awarded_contract(), awarded_contract()
    Contract.objects.filter(pk=overdue.pk).update(created_at=timezone.now() - timedelta(hours=49))
    ids = _row_ids(_rows(support, "jobs_contract", attention="funding_overdue"), "jobs/contract")
    assert ids == {overdue.pk}
    assert fresh.pk in _row_ids(_rows(support, "jobs_contract"), "jobs/contract")


def test_disputed_contracts(support):
    data = build_admin_data()
    assert _row_ids(_rows(support, "jobs_contract", attention="disputed"), "jobs/contract") == set()
    Contract.objects.filter(pk=data.contract.pk).update(review_disputed=True)
    assert _row_ids(_rows(support, "jobs_contract", attention="disputed"), "jobs/contract") == {data.contract.pk}


def test_verifications_running_or_errored_and_calibrations_labelled(support):
    data = build_admin_data()
    queued = VerificationRun.objects.get(subject=f"submission:{data.submission.pk}")
    assert queued.status == VerificationRun.Status.QUEUED
    errored = VerificationRun.objects.get(pk=queued.pk)
    errored.pk = None
    errored.status, errored.kind = VerificationRun.Status.ERROR, VerificationRun.Kind.CALIBRATION
    errored.save()
    finished = VerificationRun.objects.get(pk=queued.pk)
    finished.pk = None
    finished.status = VerificationRun.Status.PASSED
    finished.save()
    model = "verification/verificationrun"
    active = _row_ids(_rows(support, "verification_verificationrun", attention="active"), model)
    assert queued.pk in active and not {errored.pk, finished.pk} & active
    assert active == set(VerificationRun.objects.filter(status__in=["queued", "running"]).values_list("pk", flat=True))
    errored_page = _rows(support, "verification_verificationrun", attention="errored")
    assert _row_ids(errored_page, model) == {errored.pk}
    assert "calibration-label" in errored_page
    detail = support.get(reverse("admin:verification_verificationrun_change", args=[errored.pk])).content.decode()
    assert "Calibration" in detail and "No report yet" in detail


def test_frozen_escrows(support):
    data = build_admin_data()
    model = "payments/escrow"
    assert _row_ids(_rows(support, "payments_escrow", frozen__exact=1), model) == set()
    Escrow.objects.filter(pk=data.contract.escrow_id).update(frozen=True, frozen_reason="chargeback")
    assert _row_ids(_rows(support, "payments_escrow", frozen__exact=1), model) == {data.contract.escrow_id}


def test_failing_deliveries(support):
    build_admin_data()
    failing = Delivery.objects.get()
    model = "notifications/delivery"
    assert _row_ids(_rows(support, "notifications_delivery", attention="failing"), model) == {failing.pk}
    Delivery.objects.filter(pk=failing.pk).update(status=Delivery.Status.SUCCEEDED)
    assert _row_ids(_rows(support, "notifications_delivery", attention="failing"), model) == set()
    Delivery.objects.filter(pk=failing.pk).update(status=Delivery.Status.FAILED)
    page = _rows(support, "notifications_delivery", attention="failing")
    assert _row_ids(page, model) == {failing.pk} and "whsec_" not in page and "endpoint-query-secret" not in page


def test_open_reconciliation_issues_in_currency_units(support):
    build_admin_data()
    issue = ReconciliationIssue.objects.get()
    model = "payments/reconciliationissue"
    page = _rows(support, "payments_reconciliationissue", state="open")
    assert _row_ids(page, model) == {issue.pk} and "1250.00 USD" in page
    ReconciliationIssue.objects.filter(pk=issue.pk).update(resolved_at=timezone.now())
    assert _row_ids(_rows(support, "payments_reconciliationissue", state="open"), model) == set()
    assert _row_ids(_rows(support, "payments_reconciliationissue", state="resolved"), model) == {issue.pk}


def test_the_admin_index_counts_each_queue_and_links_its_list(client):
    data = build_admin_data()
    Contract.objects.filter(pk=data.contract.pk).update(review_disputed=True)
    roles = operators()
    client.force_login(roles.support)
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="operator-queues"' in page
    disputed = re.search(r'href="([^"]+attention=disputed)">[^<]+</a></th><td class="queue-count">(\d+)<', page)
    assert disputed and disputed.group(2) == "1"
    reconciliation = re.search(r'state=open">[^<]+</a></th><td class="queue-count">(\d+)<', page)
    assert reconciliation and reconciliation.group(1) == "1"
    failing = re.search(r'attention=failing">[^<]+</a></th><td class="queue-count">(\d+)<', page)
    assert failing and failing.group(1) == "1"
    for url in re.findall(r'<tr class="operator-queue"><th scope="row"><a href="([^"]+)"', page):
        assert client.get(url.replace("&amp;", "&")).status_code == 200
    # Staff without an operator role (and so without the lists' data) see no queues.
    client.force_login(operator_with_role(None, email="norole@example.test"))
    assert 'id="operator-queues"' not in client.get(reverse("admin:index")).content.decode()
