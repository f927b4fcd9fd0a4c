"""Keyset (cursor) pages of the job list: complete and ordered walks, scopes, bad cursors, constant cost."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.db import connection
from django.test.utils import CaptureQueriesContext
from drf_spectacular.generators import SchemaGenerator

from jobs.models import Job
from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory, StaffFactory, open_job

pytestmark = pytest.mark.django_db

LIST = "/api/v1/jobs/"


@pytest.fixture(params=[False, True], ids=["cache_off", "cache_on"])
def cache_mode(request, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 300 if request.param else 0
    return request.param


@pytest.fixture
def admin():
    return CompanyAdminFactory()


def _jobs(admin, n: int, **fields) -> list[Job]:
    organization = admin.memberships.get().organization
    return [JobFactory(organization=organization, created_by=admin, status=Job.Status.OPEN, **fields) for _ in range(n)]


def _ok(response) -> dict:
    assert response.status_code == 200, response.content
    return response.json()


def _ids(body) -> list[int]:
    return [job["id"] for job in body["results"]]


def _walk(client, url: str, link: str = "next") -> list[list[int]]:
    pages = []
    while url:
        body = _ok(client.get(url))
        pages.append(_ids(body))
        url = body[link]
    return pages


def test_walking_forward_and_back_returns_every_visible_job_once_in_order(api_client_for, admin, cache_mode):
    expected = sorted((job.pk for job in _jobs(admin, 7)), reverse=True)
    JobFactory(organization=CompanyAdminFactory().memberships.get().organization)  # another company's draft
    client = api_client_for(EngineerFactory())

    first = _ok(client.get(f"{LIST}?cursor=&page_size=3"))
    assert first["previous"] is None and "count" not in first
    newer = open_job(
        admin=admin
    )  # inserted between pages: newer than the walk, so neither repeated nor skipping others
    pages = [_ids(first), *_walk(client, first["next"])]
    assert pages == [expected[:3], expected[3:6], expected[6:]]

    last = _ok(client.get(first["next"]))
    last = _ok(client.get(last["next"]))
    assert last["next"] is None
    backwards = _walk(client, last["previous"], link="previous")
    assert backwards == [expected[3:6], expected[:3], [newer.pk]]  # walking back reaches the newer job


def test_previous_page_links_forward_again(api_client_for, admin):
    expected = sorted((job.pk for job in _jobs(admin, 5)), reverse=True)
    client = api_client_for(EngineerFactory())
    second = _ok(client.get(_ok(client.get(f"{LIST}?cursor=&page_size=2"))["next"]))
    back = _ok(client.get(second["previous"]))
    assert _ids(back) == expected[:2] and back["previous"] is None
    assert _ids(_ok(client.get(back["next"]))) == expected[2:4]


def test_cursor_pages_respect_scopes_even_with_a_cursor_from_another_viewer(api_client_for, admin, cache_mode):
    public = _jobs(admin, 3)
    drafts = [JobFactory(organization=admin.memberships.get().organization, created_by=admin) for _ in range(2)]
    engineer, staff = api_client_for(EngineerFactory()), api_client_for(StaffFactory())
    company = api_client_for(admin)

    company_ids = sum(_walk(company, f"{LIST}?cursor=&page_size=2"), [])
    engineer_ids = sum(_walk(engineer, f"{LIST}?cursor=&page_size=2"), [])
    assert set(company_ids) == {job.pk for job in public + drafts}
    assert engineer_ids == sorted((job.pk for job in public), reverse=True)
    assert set(sum(_walk(staff, f"{LIST}?cursor=&page_size=2"), [])) >= set(company_ids)

    company_cursor = _ok(company.get(f"{LIST}?cursor=&page_size=1"))["next"]
    assert not set(_ids(_ok(engineer.get(company_cursor)))) & {job.pk for job in drafts}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "a:b:c",
        signing.dumps([1, "next"], salt="another-salt"),
        signing.dumps([1, "next"], salt="common.pagination.cursor") + "x",
        signing.dumps(["1", "next"], salt="common.pagination.cursor"),
        signing.dumps([-1, "next"], salt="common.pagination.cursor"),
        signing.dumps([2**63, "next"], salt="common.pagination.cursor"),
        signing.dumps([1, "sideways"], salt="common.pagination.cursor"),
        signing.dumps({"id": 1}, salt="common.pagination.cursor"),
        signing.dumps([1, "next", 3], salt="common.pagination.cursor"),
        "é" * 10,
        "x" * 201,
    ],
    # Signed values carry the signing time: stable ids keep the collected names the same in every xdist worker.
    ids=[
        "garbage",
        "three-parts",
        "other-salt",
        "altered-signature",
        "string-id",
        "negative-id",
        "id-beyond-bigint",
        "unknown-direction",
        "object-not-list",
        "extra-field",
        "non-ascii",
        "too-long",
    ],
)
def test_bad_cursors_are_400_invalid_cursor(api_client_for, cursor):
    response = api_client_for(EngineerFactory()).get(LIST, {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_cursor"
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_cursor_pages_support_only_the_default_order(api_client_for, admin):
    _jobs(admin, 2)
    client = api_client_for(EngineerFactory())
    for ordering in ("budget_max", "id", "-id,budget_max", "nonsense"):
        response = client.get(LIST, {"cursor": "", "ordering": ordering})
        assert response.status_code == 400 and response.json()["error"]["code"] == "cursor_ordering_unsupported"
    assert len(_ok(client.get(LIST, {"cursor": "", "ordering": "-id"}))["results"]) == 2
    assert _ok(client.get(LIST, {"page": 1, "ordering": "budget_max"}))["count"] == 2  # page numbers unchanged


def test_filters_carry_over_to_the_links_and_page_is_dropped(api_client_for, admin, cache_mode):
    euros = sorted((job.pk for job in _jobs(admin, 3, currency="EUR")), reverse=True)
    _jobs(admin, 3, currency="USD")
    client = api_client_for(EngineerFactory())
    first = _ok(client.get(f"{LIST}?cursor=&page_size=2&currency=eur&page=2"))
    query = parse_qs(urlsplit(first["next"]).query)
    assert query["currency"] == ["eur"] and query["page_size"] == ["2"] and "page" not in query
    assert sum(_walk(client, f"{LIST}?cursor=&page_size=2&currency=eur"), []) == euros
    assert first["total"]["value"] == 3 or not first["total"]["exact"]


def test_page_size_is_capped_at_100(api_client_for, admin):
    _jobs(admin, 101)
    body = _ok(api_client_for(EngineerFactory()).get(LIST, {"cursor": "", "page_size": 500}))
    assert len(body["results"]) == 100 and body["next"]


def test_total_is_exact_on_a_single_page_and_labelled_an_estimate_otherwise(api_client_for, admin, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 0
    _jobs(admin, 3)
    client = api_client_for(EngineerFactory())
    assert _ok(client.get(f"{LIST}?cursor="))["total"] == {"value": 3, "exact": True}
    total = _ok(client.get(f"{LIST}?cursor=&page_size=2"))["total"]
    assert total["exact"] is False and isinstance(total["value"], int) and total["value"] >= 0


def test_cached_total_is_exact_per_scope_and_follows_the_version(api_client_for, admin, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 300
    _jobs(admin, 3)
    JobFactory(organization=admin.memberships.get().organization, created_by=admin)  # a draft
    engineer, company = api_client_for(EngineerFactory()), api_client_for(admin)
    assert _ok(engineer.get(f"{LIST}?cursor=&page_size=2"))["total"] == {"value": 3, "exact": True}
    assert _ok(company.get(f"{LIST}?cursor=&page_size=2"))["total"] == {"value": 4, "exact": True}
    open_job(admin=admin)  # bumps the public and the organization's versions
    assert _ok(engineer.get(f"{LIST}?cursor=&page_size=2"))["total"] == {"value": 4, "exact": True}
    assert _ok(company.get(f"{LIST}?cursor=&page_size=2"))["total"] == {"value": 5, "exact": True}


def _cursor_page_queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        body = _ok(client.get(url))
    return body, [query["sql"] for query in captured.captured_queries]


def test_cursor_pages_never_count_and_cost_a_constant_number_of_queries(api_client_for, admin, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 0
    _jobs(admin, 12)
    client = api_client_for(EngineerFactory())
    _ok(client.get(LIST))  # the token's first use is recorded once
    counts = []
    for size in (2, 5):
        url = f"{LIST}?cursor=&page_size={size}"
        for _ in range(2):
            body, queries = _cursor_page_queries(client, url)
            # The bid-count subquery counts a page's bids; no query counts the jobs (`COUNT(*) AS "__count"`).
            assert not any("COUNT(*)" in sql.upper() or "__count" in sql for sql in queries), queries
            counts.append(len(queries))
            url = body["next"]
    assert len(set(counts)) == 1, counts


def test_with_the_cache_on_a_walk_counts_once(api_client_for, admin, settings):
    settings.API_RESPONSE_CACHE_SECONDS = 300
    _jobs(admin, 6)
    client = api_client_for(EngineerFactory())
    body, first = _cursor_page_queries(client, f"{LIST}?cursor=&page_size=2")
    assert sum("COUNT(*)" in sql.upper() for sql in first) == 1
    body, second = _cursor_page_queries(client, body["next"])
    assert not any("COUNT(*)" in sql.upper() for sql in second), second


def test_cursor_pages_carry_etags_and_answer_304(api_client_for, admin, cache_mode):
    _jobs(admin, 3)
    client = api_client_for(EngineerFactory())
    url = _ok(client.get(f"{LIST}?cursor=&page_size=2"))["next"]
    first = client.get(url)
    assert first.status_code == 200
    again = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


def test_schema_documents_the_cursor_on_the_job_list_only():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    listing = schema["paths"]["/api/v1/jobs/"]["get"]
    assert any(p["name"] == "cursor" for p in listing["parameters"])
    bids = schema["paths"]["/api/v1/jobs/{id}/bids/"]["get"]
    assert not any(p["name"] == "cursor" for p in bids["parameters"])
    ref = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    shapes = schema["components"]["schemas"][ref]["oneOf"]
    assert [sorted(shape["required"]) for shape in shapes] == [
        ["count", "results"],
        ["next", "previous", "results", "total"],
    ]
