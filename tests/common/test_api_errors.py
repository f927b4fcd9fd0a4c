"""Zero 5xx: every bad input is a 4xx in the one error shape (JSON under /api/ and /internal/)."""

import re

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver

from accounts.services import api_token_create
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory
from tests.factories.jobs import job_request_body

pytestmark = pytest.mark.django_db

JSON_PREFIXES = ("/api/", "/internal/")
# Both spellings a route can have: `<converter:name>` (path) and `(?P<name>...)` (regex, one level of groups).
PARAMETER = re.compile(r"<(?:\w+:)?(?P<name>\w+)>|\(\?P<(?P<regex_name>\w+)>(?:[^()]|\([^()]*\))*\)")
STRING_IDS = {"payment_intent_id", "account_id"}
FIXED = {"name": "package", "fmt": "png"}
BAD_INTEGER_IDS = ["abc", "9223372036854775808", "99999999999999999999", "1e3"]
BAD_STRING_IDS = ["%00", "x" * 300]
METHODS = ["get", "post", "put", "patch", "delete"]


def _routes(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern)


def _concrete(route: str, value_for) -> str:
    def replace(match):
        return value_for(match.group("name") or match.group("regex_name"))

    path = PARAMETER.sub(replace, route)
    return "/" + path.replace("^", "").replace("$", "").replace("\\.", ".")


def _parameters(route: str) -> set[str]:
    return {m.group("name") or m.group("regex_name") for m in PARAMETER.finditer(route)}


def _checked_routes() -> list[str]:
    prefixes = ("api/", "internal/", "payments/")
    return sorted({r for r in _routes(get_resolver().url_patterns) if r.startswith(prefixes) and _parameters(r)})


def _bad_urls() -> list[str]:
    urls = set()
    for route in _checked_routes():
        names = _parameters(route) - set(FIXED)
        bad_values = BAD_STRING_IDS if names & STRING_IDS else BAD_INTEGER_IDS
        for bad in bad_values:
            urls.add(_concrete(route, lambda name, bad=bad: FIXED.get(name, bad)))
    return sorted(urls)


@pytest.fixture
def staff_client():
    staff = StaffFactory()
    client = Client(
        raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=staff, name='t').secret}"
    )
    client.force_login(staff)
    return client


def _assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body


def test_the_walk_covers_every_id_route():
    routes = " ".join(_checked_routes())
    for expected in (
        "jobs",
        "bids",
        "contracts",
        "submissions",
        "members",
        "tokens",
        "escrows",
        "plot",
        "runs",
        "checkout",
    ):
        assert expected in routes, expected


@pytest.mark.parametrize("url", _bad_urls())
def test_non_integer_or_out_of_range_ids_are_404(staff_client, url):
    for method in METHODS:
        response = getattr(staff_client, method)(url, {}, content_type="application/json")
        if url.startswith(JSON_PREFIXES):
            _assert_json_error(response, 404, "not_found")
        else:
            assert response.status_code == 404, (method, url, response.status_code)


def test_unknown_paths_under_the_api_are_json_404_and_html_elsewhere(staff_client):
    for path in ("/api/v1/nope/", "/api/nope", "/internal/verification/nope/"):
        _assert_json_error(staff_client.get(path), 404, "not_found")
    page = staff_client.get("/nope/")
    assert page.status_code == 404 and not page["Content-Type"].startswith("application/json")


def test_unhandled_errors_under_the_api_are_json_500_without_details(staff_client, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret-detail-xyz")

    monkeypatch.setattr("jobs.apis.JobViewSet.list", explode)
    response = staff_client.get("/api/v1/jobs/")
    _assert_json_error(response, 500, "server_error")
    assert b"secret-detail-xyz" not in response.content and b"Traceback" not in response.content

    monkeypatch.setattr("payments.pages.render", explode)
    page = staff_client.get("/payments/offline/checkout/pi_x/")
    assert page.status_code == 500 and not page["Content-Type"].startswith("application/json")
    assert b"secret-detail-xyz" not in page.content


def test_with_debug_on_the_api_still_answers_json_and_never_the_debug_pages(staff_client, settings, monkeypatch):
    """`make run` serves with DEBUG on, where Django renders its technical pages (settings, frame locals) instead
    of calling the error handlers."""
    settings.DEBUG = True
    for path in ("/api/v1/nope/", "/internal/verification/nope/"):
        _assert_json_error(staff_client.get(path), 404, "not_found")

    def explode(*args, **kwargs):
        raise RuntimeError("secret-detail-xyz")

    monkeypatch.setattr("jobs.apis.JobViewSet.list", explode)
    response = staff_client.get("/api/v1/jobs/")
    _assert_json_error(response, 500, "server_error")
    assert b"secret-detail-xyz" not in response.content and b"Traceback" not in response.content
    # A missing slash is still redirected, not answered 404.
    assert staff_client.get("/api/v1/jobs").status_code == 301


def _client_for(user=None) -> Client:
    if user is None:
        return Client(raise_request_exception=False)
    token = api_token_create(user=user, name="t").secret
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {token}")


HUGE = 99999999999999999999


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"budget_min": HUGE, "budget_max": HUGE}, "budget_min"),
        ({"budget_max": HUGE}, "budget_max"),
        ({"budget_min": 2**63, "budget_max": 2**63}, "budget_min"),
        ({"review_window_hours": HUGE}, "review_window_hours"),
        ({"max_submissions": HUGE}, "max_submissions"),
        ({"organization": HUGE}, "organization"),
        ({"invited_engineers": [HUGE]}, "invited_engineers"),
    ],
)
def test_integers_beyond_the_database_range_are_400(overrides, field):
    response = _client_for(CompanyAdminFactory()).post(
        "/api/v1/jobs/", job_request_body(**overrides), content_type="application/json"
    )
    _assert_json_error(response, 400, "validation_failed")
    assert field in response.json()["error"]["fields"]


def test_budget_updates_beyond_the_range_are_400():
    admin = CompanyAdminFactory()
    client = _client_for(admin)
    job = client.post("/api/v1/jobs/", job_request_body(), content_type="application/json").json()
    response = client.patch(f"/api/v1/jobs/{job['id']}/", {"budget_max": HUGE}, content_type="application/json")
    _assert_json_error(response, 400, "validation_failed")
    assert "budget_max" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "query", [f"budget_at_least={HUGE}", f"budget_at_most=-{HUGE}", f"page={HUGE}", f"page_size={HUGE}"]
)
def test_huge_numbers_in_list_filters_are_not_5xx(query):
    response = _client_for(EngineerFactory()).get(f"/api/v1/jobs/?{query}")
    assert response.status_code in (200, 400, 404), response.status_code
    assert response["Content-Type"].startswith("application/json")


DEEP_BODIES = {
    "arrays": "[" * 1000 + "]" * 1000,
    "objects": '{"a":' * 1000 + "1" + "}" * 1000,
    "very deep": "[" * 200_000 + "]" * 200_000,
    "inside a field": '{"title": ' + "[" * 1000 + "]" * 1000 + "}",
}


@pytest.mark.parametrize("shape", DEEP_BODIES)
@pytest.mark.parametrize(
    "method, path, who",
    [
        ("post", "/api/v1/jobs/", "company"),
        ("patch", "/api/v1/me", "engineer"),
        ("post", "/api/v1/tokens/", "engineer"),
        ("post", "/api/v1/auth/signup/engineer/", None),
    ],
)
def test_deeply_nested_json_is_400(method, path, who, shape):
    user = {"company": CompanyAdminFactory, "engineer": EngineerFactory, None: lambda: None}[who]()
    response = getattr(_client_for(user), method)(path, DEEP_BODIES[shape], content_type="application/json")
    _assert_json_error(response, 400, "json_too_deep")


def test_json_within_the_depth_limit_is_accepted():
    from common.parsers import MAX_JSON_DEPTH

    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    body = '{"name": "ok", "expires_at": null, "extra": ' + nested + "}"
    response = _client_for(EngineerFactory()).post("/api/v1/tokens/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    too_deep = '{"name": "ok", "extra": [' + nested + "]}"
    response = _client_for(EngineerFactory()).post("/api/v1/tokens/", too_deep, content_type="application/json")
    _assert_json_error(response, 400, "json_too_deep")


def test_deep_json_in_a_multipart_field_is_400():
    data = {**job_request_body(), "criteria": "[" * 1000 + "]" * 1000}
    response = _client_for(CompanyAdminFactory()).post("/api/v1/jobs/", data)
    _assert_json_error(response, 400, "json_too_deep")


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", lambda size: '{"title": "' + "x" * size + '"}'),
        ("application/x-www-form-urlencoded", lambda size: "title=" + "x" * size),
    ],
)
def test_bodies_over_the_size_cap_are_json_413(settings, content_type, body):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    client = _client_for(CompanyAdminFactory())
    response = client.post("/api/v1/jobs/", body(4096), content_type=content_type)
    _assert_json_error(response, 413, "payload_too_large")


def test_multipart_fields_over_the_size_cap_are_json_413(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = _client_for(CompanyAdminFactory()).post(
        "/api/v1/jobs/", {**job_request_body(), "description": "x" * 4096}
    )
    _assert_json_error(response, 413, "payload_too_large")


def _long_email(length: int) -> str:
    return "a" * (length - len("@example.test")) + "@example.test"


@pytest.mark.parametrize(
    "who, method, path, body, field",
    [
        ("company", "post", "/api/v1/jobs/", job_request_body(title="t" * 201), "title"),
        ("company", "post", "/api/v1/jobs/", job_request_body(description="d" * 20_001), "description"),
        (
            "company",
            "post",
            "/api/v1/jobs/",
            job_request_body(invited_engineers=list(range(1, 52))),
            "invited_engineers",
        ),
        ("engineer", "patch", "/api/v1/me", {"headline": "h" * 201}, "headline"),
        ("engineer", "patch", "/api/v1/me", {"name": "n" * 151}, "name"),
        ("engineer", "patch", "/api/v1/me", {"skills": ["s"] * 51}, "skills"),
        ("engineer", "patch", "/api/v1/me", {"skills": ["s" * 101]}, "skills"),
        ("engineer", "patch", "/api/v1/me", {"hardware_expertise": ["h"] * 51}, "hardware_expertise"),
        ("engineer", "post", "/api/v1/tokens/", {"name": "n" * 101}, "name"),
        (
            None,
            "post",
            "/api/v1/auth/signup/company/",
            {"email": _long_email(300), "password": "long-enough-pw-1", "name": "n", "organization_name": "o"},
            "email",
        ),
        (
            None,
            "post",
            "/api/v1/auth/signup/company/",
            {"email": "a@example.test", "password": "long-enough-pw-1", "name": "n", "organization_name": "o" * 201},
            "organization_name",
        ),
        (
            None,
            "post",
            "/api/v1/auth/signup/engineer/",
            {"email": "b@example.test", "password": "long-enough-pw-1", "name": "n", "skills": ["s"] * 51},
            "skills",
        ),
    ],
)
def test_free_text_and_lists_have_length_limits(who, method, path, body, field):
    user = {"company": CompanyAdminFactory, "engineer": EngineerFactory, None: lambda: None}[who]()
    response = getattr(_client_for(user), method)(path, body, content_type="application/json")
    _assert_json_error(response, 400, "validation_failed")
    assert field in response.json()["error"]["fields"]


def test_bid_proposals_have_a_length_limit():
    from jobs.models import Job
    from tests.factories import JobFactory

    job = JobFactory(status=Job.Status.OPEN)
    response = _client_for(EngineerFactory()).post(
        f"/api/v1/jobs/{job.pk}/bids/",
        {"amount": 5_000, "estimated_days": 2, "proposal": "p" * 10_001},
        content_type="application/json",
    )
    _assert_json_error(response, 400, "validation_failed")
    assert "proposal" in response.json()["error"]["fields"]


def test_the_job_list_serves_a_summary_and_the_detail_the_full_description():
    from jobs.serializers import LIST_DESCRIPTION_CHARS

    admin = CompanyAdminFactory()
    client = _client_for(admin)
    description = ("word " * 4_000).strip()
    created = client.post("/api/v1/jobs/", job_request_body(description=description), content_type="application/json")
    assert created.status_code == 201, created.content
    job_id = created.json()["id"]
    listed = next(item for item in client.get("/api/v1/jobs/").json()["results"] if item["id"] == job_id)
    assert len(listed["description"]) <= LIST_DESCRIPTION_CHARS + 1
    assert listed["description_truncated"] is True
    assert listed["url"].endswith(f"/api/v1/jobs/{job_id}/")
    detail = client.get(f"/api/v1/jobs/{job_id}/").json()
    assert detail["description"] == description and detail["description_truncated"] is False


def test_a_short_description_is_listed_whole():
    client = _client_for(CompanyAdminFactory())
    job_id = client.post(
        "/api/v1/jobs/", job_request_body(description="short"), content_type="application/json"
    ).json()["id"]
    listed = next(item for item in client.get("/api/v1/jobs/").json()["results"] if item["id"] == job_id)
    assert listed["description"] == "short" and listed["description_truncated"] is False
