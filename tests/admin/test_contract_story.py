"""The contract page tells an operator the whole story: timeline, bids, escrow and ledger in currency units,
submissions with their readable runs and plots, certificate status, the dispute and outbound deliveries."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from jobs.models import Contract
from jobs.selectors import contract_story
from verification.models import VerificationRun

from .conftest import HIDDEN_MARKER, build_admin_data, build_disputed_contract, operators

pytestmark = pytest.mark.django_db


def _story_url(contract) -> str:
    return reverse("admin:jobs_contract_change", args=[contract.pk])


def _plot_url(run, fmt="png") -> str:
    return reverse("admin:verification_verificationrun_plot", args=[run.pk, fmt])


@pytest.fixture
def roles():
    return operators()


@pytest.mark.parametrize("role", ["support", "payments"])
def test_the_story_page_shows_everything_in_currency_units(client, disputed, roles, role):
    client.force_login(getattr(roles, role))
    page = client.get(_story_url(disputed.contract)).content.decode()
    story = page[page.index('id="contract-story"') :]
    # Escrow and ledger lines in currency units; never a raw minor-unit amount.
    assert "2500.00 USD" in story and "250.00 USD" in story
    assert re.search(r'class="ledger-amount">-?\d+\.\d\d USD<', story)
    assert not re.search(r'class="ledger-amount">-?\d+<', story)
    assert "250000" not in story
    # The run, readable: decision, estimate and interval, runs, blocked actions, host, certificate.
    run = disputed.run
    assert f'id="story-run-{run.pk}"' in story
    assert "PASS" in story and "1.800 [1.620, 1.980]" in story
    assert "8 pairs, 16 runs in all" in story
    assert "candidate: network (2 runs)" in story
    assert "host: verify-cpu-3" in story
    assert "✔ signature valid" in story
    assert _plot_url(run) in story
    # The dispute, the bids, the timeline and the deliveries.
    assert f"The company disputes run {run.pk}" in story and "outputs look cached" in story
    assert "contract_review_disputed" in story and "verification_finished" in story and "submission_received" in story
    assert story.count('class="story-bid') == 1
    # Logs may echo hidden inputs: they are not on the page, not even in the raw report.
    assert HIDDEN_MARKER not in page
    assert (
        HIDDEN_MARKER
        not in client.get(reverse("admin:verification_verificationrun_change", args=[run.pk])).content.decode()
    )


def test_only_the_payments_operator_is_offered_the_ruling(client, disputed, roles):
    client.force_login(roles.support)
    page = client.get(_story_url(disputed.contract)).content.decode()
    assert 'id="rule-dispute"' not in page
    assert "needs the payments operator role" in page
    client.force_login(roles.payments)
    page = client.get(_story_url(disputed.contract)).content.decode()
    assert 'id="rule-dispute"' in page


def test_a_tampered_certificate_shows_as_invalid(client, disputed, roles):
    run = disputed.run
    report = {**run.report, "payout_fraction": 1.0}
    VerificationRun.objects.filter(pk=run.pk).update(report=report)
    client.force_login(roles.support)
    page = client.get(_story_url(disputed.contract)).content.decode()
    assert "✘ does not verify" in page and "✔ signature valid" not in page


def test_plots_are_served_to_operators_only(client, disputed, roles):
    run = disputed.run
    client.force_login(roles.support)
    png = client.get(_plot_url(run))
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert b"".join(png.streaming_content).startswith(b"\x89PNG")
    svg = client.get(_plot_url(run, "svg"))
    assert svg.status_code == 200 and "sandbox" in svg["Content-Security-Policy"]
    assert client.get(_plot_url(run, "html")).status_code == 404
    for outsider in (disputed.contract.engineer, disputed.contract.job.created_by):
        client.force_login(outsider)
        response = client.get(_plot_url(run))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.logout()
    assert client.get(_plot_url(run)).status_code == 302


def test_the_story_reads_the_same_number_of_queries_however_many_runs(client, disputed, roles, dispatched, settle):
    longer = build_disputed_contract(dispatched=dispatched, settle=settle, earlier_failed_attempt=True)
    client.force_login(roles.support)

    def queries_for(contract) -> int:
        client.get(_story_url(contract))  # the session and permission caches warm up first
        with CaptureQueriesContext(connection) as queries:
            assert client.get(_story_url(contract)).status_code == 200
        return len(queries)

    assert len(longer.runs) == 2
    assert queries_for(longer.contract) == queries_for(disputed.contract) <= 30


def test_outbound_deliveries_show_the_host_only(client):
    data = build_admin_data()
    client.force_login(data.staff)
    story = contract_story(contract_id=data.contract.pk)
    assert [item.destination for item in story.deliveries] == ["hooks.example.test"]
    page = client.get(_story_url(data.contract)).content.decode()
    assert "hooks.example.test" in page
    assert "endpoint-query-secret" not in page and "whsec_" not in page


def test_an_unfunded_contract_has_an_escrow_waiting_and_nothing_else_yet(client, roles):
    from tests.factories import awarded_contract

    contract = awarded_contract()
    client.force_login(roles.support)
    page = client.get(_story_url(contract)).content.decode()
    assert contract.status == Contract.Status.AWAITING_FUNDING
    assert "No ledger lines yet." in page and "No submission yet." in page and "No open dispute." in page
