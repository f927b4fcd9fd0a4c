"""An operator uses the admin in a real browser: log in, filter and search jobs, read contracts' money."""

import re

import pytest

from common.models import AuditEvent
from jobs.models import Job

from .conftest import OPERATOR_PASSWORD, build_admin_data


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_filters_searches_and_reads_money_in_the_admin(live_server, page, screenshot):
    data = build_admin_data()
    base = live_server.url

    page.goto(f"{base}/admin/")
    page.fill("#id_username", data.staff.email)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "Site administration" in page.content()

    # Job changelist: both published jobs and the draft are listed; the status filter narrows to open ones.
    page.goto(f"{base}/admin/jobs/job/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    page.locator("#changelist-filter a", has_text="Open for bids").first.click()
    page.wait_for_url(re.compile(r"status__exact=open"))
    assert rows.count() == 1
    assert rows.first.locator(".field-title").inner_text() == data.open_job.title
    assert "50000 JPY – 90000 JPY" in rows.first.locator(".field-budget_display").inner_text()
    screenshot(page, "jobs-open")

    # Search by title.
    page.goto(f"{base}/admin/jobs/job/")
    page.fill("#searchbar", "Vectorize")
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"q=Vectorize"))
    assert rows.count() == 1
    assert rows.first.locator(".field-title").inner_text() == data.contract.job.title
    assert page.locator(".object-tools a.addlink").count() == 0  # jobs are created through the API only

    # Contract changelist: money shown in currency units, not raw minor units.
    page.goto(f"{base}/admin/jobs/contract/")
    row = page.locator("#result_list tbody tr").first
    assert row.locator(".field-amount_display").inner_text() == "2500.00 USD"
    assert row.locator(".field-platform_fee_display").inner_text() == "250.00 USD"
    assert row.locator(".field-status").inner_text() == "Funded, in progress"

    # Contract change page: amounts, fee and status are read-only text, and there is nothing to save.
    row.locator("th a").click()
    page.wait_for_url(re.compile(rf"/admin/jobs/contract/{data.contract.pk}/change/"))
    for field in ("amount", "platform_fee", "status", "currency", "submissions_used"):
        assert page.locator(f"form [name={field}]").count() == 0
    for field in ("status", "currency"):
        assert page.locator(f".field-{field} .readonly").count() == 1
    assert page.locator(".field-amount_display .readonly").inner_text() == "2500.00 USD"
    assert page.locator(".field-platform_fee_display .readonly").inner_text() == "250.00 USD"
    assert page.locator(".field-attempts_display .readonly").inner_text() == "1 / 5"
    assert page.locator("input[name=_save]").count() == 0
    screenshot(page, "contract-change")

    # Job change page: read-only too, with the bids inline.
    page.goto(f"{base}/admin/jobs/job/{data.open_job.pk}/change/")
    assert page.locator("form [name=title]").count() == 0
    assert page.locator(".field-status .readonly").inner_text() == "Open for bids"
    assert "70000 JPY" in page.locator(".inline-group").inner_text()

    # Audit events: listed, searchable by object id, never added.
    page.goto(f"{base}/admin/common/auditevent/?q={data.open_job.pk}&object_type__exact=jobs.job")
    events = page.locator("#result_list tbody tr")
    assert events.count() == AuditEvent.objects.filter(object_type="jobs.job", object_id=str(data.open_job.pk)).count()
    assert page.locator(".object-tools a.addlink").count() == 0

    screenshot(page, "audit-events")
    assert Job.objects.get(pk=data.open_job.pk).status == Job.Status.OPEN
