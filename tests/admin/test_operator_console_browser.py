"""The operator console in a real browser (Debian's Chromium): a payments operator finds a disputed contract,
reads both runs' reports and plots, rules through the confirmation page, and sees the escrow and ledger move;
a support user reads the same story and cannot move money. Screenshots are kept under the test's tmp path."""

import re

import pytest

from common.models import AuditEvent
from payments.models import Escrow, LedgerEntry

from .conftest import OPERATOR_PASSWORD, build_disputed_contract, operators


def _log_in(page, base: str, email: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", email)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def _plots_loaded(page, selector: str = "img.run-plot") -> list[int]:
    page.wait_for_load_state("load")
    return page.eval_on_selector_all(selector, "imgs => imgs.map(img => img.complete ? img.naturalWidth : 0)")


@pytest.fixture
def story(db, dispatched, eager_tasks):
    built = build_disputed_contract(dispatched=dispatched, earlier_failed_attempt=True, reverified=True)
    built.roles = operators()
    return built


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_payments_operator_rules_on_a_disputed_contract(live_server, page, story, screenshot):
    base, contract = live_server.url, story.contract
    assert story.dispute.status == "awaiting_ruling" and story.dispute.recommendation == "agree"
    _log_in(page, base, story.roles.payments.email)

    # Find it: the contract list's "disputed" queue.
    page.goto(f"{base}/admin/jobs/contract/")
    page.locator("#changelist-filter a", has_text="Disputed, awaiting a ruling").click()
    page.wait_for_url(re.compile(r"attention=disputed"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    rows.first.locator("th a").click()
    page.wait_for_url(re.compile(rf"/admin/jobs/contract/{contract.pk}/change/"))

    # Every run, readable, with its plot drawn: the failed first attempt, the disputed PASS and its
    # re-verification on a second host.
    runs = page.locator(".story-run")
    assert runs.count() == 3
    assert "FAIL" in runs.nth(0).locator(".run-decision").inner_text()
    assert "PASS" in runs.nth(1).locator(".run-decision").inner_text()
    assert "PASS" in runs.nth(2).locator(".run-decision").inner_text()
    assert "verify-cpu-7 (the host that started the run)" in runs.nth(2).locator(".run-host").inner_text()
    plots = _plots_loaded(page)
    assert len(plots) == 3 and all(width > 100 for width in plots)
    assert page.locator("#story-escrow .escrow-released").inner_text().startswith("0.00 USD")
    ledger_lines = page.locator("#story-ledger .ledger-line").count()
    assert "outputs look cached" in page.locator("#story-dispute").inner_text()
    screenshot(page, "story-disputed")

    # Rule: the ruling page shows both runs side by side, plots included, with the re-run's recommendation,
    # and takes the note for the audit log.
    page.click("#rule-dispute")
    page.wait_for_url(re.compile(rf"/admin/jobs/dispute/{story.dispute.pk}/rule/"))
    page.wait_for_selector("select[name=ruling]")
    assert "Original run" in page.content() and "Re-verification" in page.content()
    assert "Recommendation: Agree: the original result stands" in page.locator("#content").inner_text()
    side_by_side = _plots_loaded(page, "#content table img")
    assert len(side_by_side) == 2 and all(width > 100 for width in side_by_side)
    compared = page.locator("#content table").first.inner_text()
    assert "verify-cpu-3" in compared and "verify-cpu-7" in compared
    assert "3 (index 2)" in compared and "[1.620, 1.980]" in compared and "[1.584, 1.936]" in compared
    screenshot(page, "ruling-confirmation")
    page.select_option("select[name=ruling]", "uphold")
    page.fill("textarea[name=note]", "timings vary per run: not cached")
    page.click("input[type=submit][value='Confirm the ruling']")
    page.wait_for_selector("ul.messagelist")
    assert "ruled: uphold" in page.locator("ul.messagelist").inner_text()

    # The story page after the ruling: money released and in the ledger, the note in the timeline.
    page.goto(f"{base}/admin/jobs/contract/{contract.pk}/change/")
    assert page.locator("#story-escrow .escrow-released").inner_text().startswith("1250.00 USD")
    assert page.locator("#story-ledger .ledger-line").count() > ledger_lines
    assert "No open dispute." in page.locator("#story-dispute").inner_text()
    assert "timings vary per run: not cached" in page.locator("#story-timeline").inner_text()
    screenshot(page, "story-ruled")

    contract.refresh_from_db()
    assert not contract.review_disputed
    assert Escrow.objects.get(pk=contract.escrow_id).released_bps == 5_000
    assert LedgerEntry.objects.filter(escrow_id=contract.escrow_id).count() > 0
    ruled = AuditEvent.objects.get(verb="dispute_resolved", actor=story.roles.payments)
    assert ruled.data["note"] == "timings vary per run: not cached"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_support_reads_the_story_and_cannot_move_money(live_server, page, story, screenshot):
    base, contract = live_server.url, story.contract
    _log_in(page, base, story.roles.support.email)
    page.goto(f"{base}/admin/jobs/contract/{contract.pk}/change/")
    assert page.locator(".story-run").count() == 3
    plots = _plots_loaded(page)
    assert len(plots) == 3 and all(width > 100 for width in plots)
    assert "✔ signature valid" in page.locator("#story-submissions").inner_text()
    assert "host: verify-cpu-3" in page.locator("#story-submissions").inner_text()
    assert page.locator("#rule-dispute").count() == 0 and page.locator("#rule-release").count() == 0
    assert "needs the payments operator role" in page.locator("#story-dispute").inner_text()
    screenshot(page, "support-story")

    # The actions list offers no money action either.
    page.goto(f"{base}/admin/jobs/contract/")
    options = page.locator("select[name=action] option").all_inner_texts()
    assert not any("dispute" in option.lower() for option in options)

    # A ruling forged in the page (the form the payments operator would post) moves nothing.
    page.goto(f"{base}/admin/jobs/contract/{contract.pk}/change/")
    page.evaluate(
        """(contractId) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = '/admin/jobs/contract/';
            const fields = {
                csrfmiddlewaretoken: document.querySelector('[name=csrfmiddlewaretoken]').value,
                action: 'dispute_release', _selected_action: String(contractId), confirm: 'Confirm', note: 'forged',
            };
            for (const [name, value] of Object.entries(fields)) {
                const input = document.createElement('input');
                input.type = 'hidden'; input.name = name; input.value = value; form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        contract.pk,
    )
    page.wait_for_load_state()
    screenshot(page, "support-forged-ruling")

    # The ruling page itself is refused, and a ruling posted to it (with a valid session and CSRF token) too.
    rule_url = f"{base}/admin/jobs/dispute/{story.dispute.pk}/rule/"
    assert page.goto(rule_url).status == 403
    page.goto(f"{base}/admin/jobs/contract/{contract.pk}/change/")
    csrf = page.locator("[name=csrfmiddlewaretoken]").first.get_attribute("value")
    forged = page.request.post(
        rule_url,
        form={"csrfmiddlewaretoken": csrf, "ruling": "uphold", "note": "forged"},
        headers={"Referer": rule_url},
    )
    assert forged.status == 403
    story.dispute.refresh_from_db()
    assert story.dispute.ruling == "" and story.dispute.status == "awaiting_ruling"
    contract.refresh_from_db()
    assert contract.review_disputed
    assert Escrow.objects.get(pk=contract.escrow_id).released_bps == 0
    assert not AuditEvent.objects.filter(verb__in=["operator_action", "contract_dispute_resolved"]).exists()
