"""Operators' dispute pages: the list with its filters, both results side by side, and the ruling on a
confirmation page that requires a note and goes through the service (support may not rule)."""

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.models import User
from accounts.operators import SUPPORT
from jobs.models import Dispute
from jobs.services.disputes import dispute_open
from tests.admin.conftest import _measurements
from tests.factories import StaffFactory, funded_contract
from tests.factories.accounts import UserFactory
from tests.factories.disputes import Host, submit_and_verify, token_of
from tests.factories.jobs import onboard
from verification.services import verification_plot_render

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispute(dispatched, django_capture_on_commit_callbacks):
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    capture = django_capture_on_commit_callbacks
    submit_and_verify(contract, host=Host("host-a"), dispatched=dispatched, capture=capture, fraction=0.5)
    with capture(execute=True):
        dispute = dispute_open(actor=contract.job.created_by, contract_id=contract.pk, reason="cached outputs")
    rerun = dispute.reverification_run
    with capture(execute=True):
        Host("host-b").finish(rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0)
    dispute.refresh_from_db()
    return dispute


def test_list_filters_and_side_by_side(client, dispute):
    client.force_login(StaffFactory())
    listing = reverse("admin:jobs_dispute_changelist")
    for query in ("", "?status__exact=awaiting_ruling", "?escalated=no", "?recommendation__exact=disagree"):
        page = client.get(listing + query)
        assert page.status_code == 200 and f">{dispute.pk}<" in page.content.decode(), query
    assert f">{dispute.pk}<" not in client.get(listing + "?escalated=yes").content.decode()
    detail = client.get(reverse("admin:jobs_dispute_change", args=[dispute.pk])).content.decode()
    assert "host-a" in detail and "host-b" in detail and "Re-verification" in detail


def test_ruling_needs_a_note_and_the_payments_role(client, dispute):
    url = reverse("admin:jobs_dispute_rule", args=[dispute.pk])
    support = UserFactory(account_type=User.AccountType.OPERATOR, is_staff=True)
    support.groups.add(Group.objects.get_or_create(name=SUPPORT)[0])
    client.force_login(support)
    # The page is refused to support (the service refuses the role too: tests/admin/test_operator_actions.py).
    assert client.get(url).status_code == 403
    assert client.post(url, {"ruling": "overturn_withhold", "note": "cached"}).status_code == 403
    client.force_login(StaffFactory())
    assert client.post(url, {"ruling": "overturn_withhold", "note": ""}).status_code == 200  # the form asks again
    dispute.refresh_from_db()
    assert dispute.status == Dispute.Status.AWAITING_RULING
    done = client.post(url, {"ruling": "overturn_withhold", "note": "the second host fails it"})
    assert done.status_code == 302
    dispute.refresh_from_db()
    assert (dispute.status, dispute.ruling, dispute.ruling_note) == (
        "resolved",
        "overturn_withhold",
        "the second host fails it",
    )


def test_side_by_side_shows_both_runs_plots_through_the_admin(client, dispatched, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    original = submit_and_verify(
        contract,
        host=Host("host-a"),
        dispatched=dispatched,
        capture=capture,
        fraction=0.5,
        measurements=_measurements(12, 6),
    )
    with capture(execute=True):
        dispute = dispute_open(actor=contract.job.created_by, contract_id=contract.pk, reason="cached outputs")
    rerun = dispute.reverification_run
    with capture(execute=True):
        Host("host-b").finish(
            rerun, token_of(dispatched, rerun), decision="FAIL", fraction=0.0, measurements=_measurements(12, 11)
        )
    for run_id in (original.pk, rerun.pk):
        assert verification_plot_render(run_id=run_id).plot_png_id
    client.force_login(StaffFactory())
    for url in (
        reverse("admin:jobs_dispute_change", args=[dispute.pk]),
        reverse("admin:jobs_dispute_rule", args=[dispute.pk]),
    ):
        page = client.get(url).content.decode()
        for run_id in (dispute.disputed_run_id, rerun.pk):
            plot = reverse("admin:verification_verificationrun_plot", args=[run_id, "png"])
            assert f'<img src="{plot}"' in page, (url, run_id)
        assert "/api/v1/" not in page


def test_an_escalated_dispute_is_listed_and_counted_until_it_is_ruled(client, dispute, settings):
    from jobs.services.disputes import dispute_rule, disputes_escalate_overdue

    listing = reverse("admin:jobs_dispute_changelist")
    client.force_login(StaffFactory())

    def queue() -> tuple[str, int]:
        page = client.get(reverse("admin:index")).content.decode()
        found = re.search(r'href="([^"]+escalated=yes[^"]*)">[^<]+</a></th><td class="queue-count">(\d+)<', page)
        assert found, "no escalated-disputes queue on the admin index"
        return found.group(1).replace("&amp;", "&"), int(found.group(2))

    assert queue()[1] == 0
    settings.DISPUTE_ESCALATE_AFTER_HOURS = 0
    assert disputes_escalate_overdue() == [dispute.pk]
    url, count = queue()
    assert count == 1
    assert f">{dispute.pk}<" in client.get(url).content.decode()
    assert f">{dispute.pk}<" in client.get(listing + "?escalated=yes").content.decode()
    assert f">{dispute.pk}<" not in client.get(listing + "?escalated=no").content.decode()

    dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="the first host stands")
    url, count = queue()
    assert count == 0 and f">{dispute.pk}<" not in client.get(url).content.decode()
