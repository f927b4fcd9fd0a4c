"""Every registered admin renders for an operator, and the admin never writes state around the services."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, EngineerProfile, User
from common.models import AuditEvent
from jobs.models import Contract, Job
from tests.factories import open_job

from .conftest import build_admin_data

REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)
OWN_APPS = {"common", "accounts", "jobs"}


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


class _FormFields(HTMLParser):
    """The fields a browser would submit from the admin's change form (inline management forms included)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "checkbox", "file"):
            self.data[name] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_data(self, data) -> None:
        if self._textarea:
            self.data[self._textarea] += data

    def handle_endtag(self, tag) -> None:
        if tag == "textarea":
            self._textarea = None


def _form_data(page: str) -> dict[str, str]:
    parser = _FormFields()
    parser.feed(page)
    parser.data.pop("csrfmiddlewaretoken", None)
    return parser.data


@pytest.fixture
def operator(client, admin_data):
    client.force_login(admin_data.staff)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=lambda model: model._meta.label)
def test_every_admin_page_renders_for_an_operator(model, operator, admin_data):
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/")
    request.user = admin_data.staff

    assert operator.get(_url(model, "changelist")).status_code == 200
    # Searching exercises every search field's lookup, which only fails when a search runs.
    if model_admin.get_search_fields(request):
        assert operator.get(_url(model, "changelist"), {"q": "1"}).status_code == 200

    expected_add = 200 if model_admin.has_add_permission(request) else 403
    assert operator.get(_url(model, "add")).status_code == expected_add

    obj = model_admin.get_queryset(request).order_by("pk").first()
    if obj is None:
        pytest.skip(f"no {model._meta.label} row in the admin test data; add one to build_admin_data")
    assert operator.get(_url(model, "change", obj.pk)).status_code == 200


@pytest.mark.django_db
def test_changelists_do_not_query_per_row(client):
    """list_select_related / annotations: twice the rows, the same number of queries."""
    first = build_admin_data(round_=0)
    client.force_login(first.staff)
    own = [model for model in REGISTERED if model._meta.app_label in OWN_APPS]

    def count_queries() -> dict[str, int]:
        counts = {}
        for model in own:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(_url(model, "changelist")).status_code == 200
            counts[model._meta.label] = len(queries)
        return counts

    before = count_queries()
    build_admin_data(round_=1)
    assert count_queries() == before


@pytest.mark.django_db
def test_audit_events_are_read_only(operator, admin_data):
    event = AuditEvent.objects.order_by("pk").first()
    page = operator.get(_url(AuditEvent, "change", event.pk)).content.decode()
    assert 'name="verb"' not in page and 'name="_save"' not in page
    assert operator.get(_url(AuditEvent, "add")).status_code == 403
    assert operator.get(_url(AuditEvent, "delete", event.pk)).status_code == 403
    operator.post(_url(AuditEvent, "change", event.pk), {"verb": "forged"})
    event.refresh_from_db()
    assert event.verb != "forged"


@pytest.mark.django_db
def test_money_is_readable_and_read_only(operator, admin_data):
    contract = admin_data.contract
    changelist = operator.get(_url(Contract, "changelist")).content.decode()
    assert "2500.00 USD" in changelist and "250.00 USD" in changelist
    page = operator.get(_url(Contract, "change", contract.pk)).content.decode()
    for name in ("amount", "platform_fee", "status", "currency"):
        assert f'name="{name}"' not in page
    jobs = operator.get(_url(Job, "changelist")).content.decode()
    assert "50000 JPY – 90000 JPY" in jobs


@pytest.mark.django_db
def test_jobs_are_read_only_here(operator, admin_data):
    """Job edits belong to the job's organization through the API; the admin shows, it does not write."""
    job = admin_data.open_job
    page = operator.get(_url(Job, "change", job.pk)).content.decode()
    assert "Quantize the ranker 0" in page
    for name in ("title", "status", "budget_min", "budget_max", "currency", "criteria"):
        assert f'name="{name}"' not in page
    assert operator.get(_url(Job, "add")).status_code == 403
    assert operator.get(_url(Job, "delete", job.pk)).status_code == 403
    operator.post(_url(Job, "change", job.pk), {**_form_data(page), "title": "Forged", "status": "completed"})
    job.refresh_from_db()
    assert job.title == "Quantize the ranker 0" and job.status == Job.Status.OPEN


@pytest.mark.django_db
def test_api_tokens_show_prefix_only_and_revoke_through_the_service(operator, admin_data):
    token = admin_data.token
    for url in (_url(ApiToken, "changelist"), _url(ApiToken, "change", token.pk)):
        page = operator.get(url).content.decode()
        assert token.prefix in page
        assert token.token_hash not in page and admin_data.token_secret not in page
    response = operator.post(
        _url(ApiToken, "changelist"), {"action": "revoke_tokens", "_selected_action": [token.pk], "index": 0}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    active = operator.get(_url(ApiToken, "changelist"), {"state": "active"}).content.decode()
    assert token.prefix not in active


@pytest.mark.django_db
def test_expire_action_calls_the_service(operator, admin_data):
    current = admin_data.open_job
    overdue = open_job(title="Left unawarded")
    Job.objects.filter(pk=overdue.pk).update(bidding_deadline=timezone.now() - timedelta(days=60))
    selected = {"action": "expire_overdue", "_selected_action": [current.pk, overdue.pk]}
    confirmation = operator.post(_url(Job, "changelist"), {**selected, "index": 0})
    assert confirmation.status_code == 200 and b'name="note"' in confirmation.content
    response = operator.post(_url(Job, "changelist"), {**selected, "confirm": "Confirm", "note": "overdue sweep"})
    assert response.status_code == 302
    current.refresh_from_db()
    overdue.refresh_from_db()
    assert (current.status, overdue.status) == (Job.Status.OPEN, Job.Status.EXPIRED)
    assert AuditEvent.objects.filter(object_type="jobs.job", object_id=str(overdue.pk), verb="job_expired").exists()


@pytest.mark.django_db
def test_dispute_actions_call_the_service(operator, admin_data):
    contract = Contract.objects.filter(status=Contract.Status.ACTIVE).first()
    assert contract is not None
    Contract.objects.filter(pk=contract.pk).update(
        review_disputed=True, earned_bps=10_000, release_due_at=timezone.now() + timedelta(hours=40)
    )
    response = operator.post(
        _url(Contract, "changelist"),
        {"action": "dispute_withhold", "_selected_action": [contract.pk], "confirm": "Confirm", "note": "cached"},
    )
    assert response.status_code == 302
    contract.refresh_from_db()
    # The disputed top tier is withheld; what was already paid out (half, in the fixture) stays earned.
    assert (contract.review_disputed, contract.earned_bps, contract.release_due_at) == (False, 5_000, None)
    assert AuditEvent.objects.filter(object_id=str(contract.pk), verb="contract_dispute_resolved").exists()


@pytest.mark.django_db
def test_engineer_profile_edits_go_through_the_service_and_keep_the_track_record(operator, admin_data):
    profile = admin_data.engineer.engineer_profile
    url = _url(EngineerProfile, "change", profile.pk)
    page = operator.get(url).content.decode()
    for name in ("jobs_passed", "best_certified_speedup", "certified_results", "user"):
        assert f'name="{name}"' not in page
    data = {**_form_data(page), "headline": "SIMD specialist", "jobs_passed": "99"}
    assert operator.post(url, data).status_code == 302
    profile.refresh_from_db()
    assert (profile.headline, profile.jobs_passed) == ("SIMD specialist", 0)


@pytest.mark.django_db
def test_operators_add_operator_accounts_only(operator, admin_data):
    url = _url(User, "add")
    form = {"email": "New.Operator@Example.test", "name": "Ops", "usable_password": "true"}
    form |= {"password1": "a long operator passphrase", "password2": "a long operator passphrase"}
    assert operator.post(url, {**form, "account_type": "engineer"}).status_code == 200  # not a valid choice
    assert operator.post(url, {**form, "account_type": "operator"}).status_code == 302
    user = User.objects.get(email="new.operator@example.test")
    assert user.account_type == User.AccountType.OPERATOR and user.check_password("a long operator passphrase")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["support", "payments"])
def test_every_operated_page_renders_for_each_role_and_shows_no_secret(client, role, dispatched, settle):
    """Support and the payments operator read every operated model; no page shows hidden inputs or secrets."""
    from accounts.operators import OPERATED_APPS

    from .conftest import HIDDEN_MARKER, build_disputed_contract, operators

    data = build_admin_data()
    build_disputed_contract(dispatched=dispatched, settle=settle)
    client.force_login(getattr(operators(), role))
    secrets = (HIDDEN_MARKER, data.token_secret, data.token.token_hash, "whsec_", "endpoint-query-secret", "[[1.0]]")
    request = RequestFactory().get("/")
    request.user = data.staff
    operated = [model for model in REGISTERED if model._meta.app_label in OPERATED_APPS]
    assert {model._meta.label for model in operated} >= {"jobs.Contract", "notifications.Delivery"}
    for model in operated:
        model_admin = admin.site._registry[model]
        pages = [_url(model, "changelist")]
        obj = model_admin.get_queryset(request).order_by("-pk").first()
        if obj is not None:
            pages.append(_url(model, "change", obj.pk))
        for url in pages:
            response = client.get(url)
            assert response.status_code == 200, url
            body = response.content.decode()
            assert not [secret for secret in secrets if secret in body], url


@pytest.mark.django_db
def test_payments_pages_show_amounts_in_currency_units(operator, admin_data):
    from payments.models import Escrow, LedgerTransaction, ProviderOperation

    escrow = Escrow.objects.get(pk=admin_data.contract.escrow_id)
    transaction = LedgerTransaction.objects.filter(escrow=escrow).order_by("pk").first()
    operation = ProviderOperation.objects.filter(escrow=escrow).order_by("pk").first()
    pages = [
        _url(Escrow, "changelist"),
        _url(Escrow, "change", escrow.pk),
        _url(ProviderOperation, "changelist"),
        _url(ProviderOperation, "change", operation.pk),
        _url(LedgerTransaction, "change", transaction.pk),
    ]
    for url in pages:
        page = operator.get(url).content.decode()
        assert re.search(r"\d+\.\d\d USD", page), url
        assert not re.search(r">-?(250000|25000|125000|275000)<", page), url
