"""Every endpoint × every role: who may read, who may act, and who must not even learn an object exists."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import UserFactory
from tests.factories.archives import package_archive

from .conftest import candidate_upload

ROLES = ("anonymous", "engineer", "other_engineer", "other_company_member", "member", "admin", "staff")


def _job_body(market):
    return {
        "organization": market.admin.memberships.get().organization_id,
        "title": "New job",
        "hardware_class": "cpu-x86",
        "currency": "EUR",
        "budget_min": 1000,
        "budget_max": 2000,
        "bidding_deadline": (timezone.now() + timedelta(days=3)).isoformat(),
    }


def _new_colleague(market):
    return {"email": UserFactory().email, "role": "member"}


# (name, method, path template, body builder, format, {role: status})
MATRIX = [
    ("me", "get", "/api/v1/me", None, None, dict.fromkeys(ROLES[1:], 200)),
    ("tokens", "get", "/api/v1/tokens/", None, None, dict.fromkeys(ROLES[1:], 200)),
    ("job list", "get", "/api/v1/jobs/", None, None, dict.fromkeys(ROLES[1:], 200)),
    (
        "draft job detail",
        "get",
        "/api/v1/jobs/{m.draft_job.pk}/",
        None,
        None,
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    ("open job detail", "get", "/api/v1/jobs/{m.open_job.pk}/", None, None, dict.fromkeys(ROLES[1:], 200)),
    (
        "job create",
        "post",
        "/api/v1/jobs/",
        _job_body,
        "json",
        {
            "engineer": 403,
            "other_engineer": 403,
            "other_company_member": 403,
            "member": 201,
            "admin": 201,
            "staff": 403,
        },
    ),
    (
        "job update",
        "patch",
        "/api/v1/jobs/{m.draft_job.pk}/",
        lambda m: {"title": "Renamed"},
        "json",
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 403,
        },
    ),
    (
        "job publish",
        "post",
        "/api/v1/jobs/{m.draft_job.pk}/publish/",
        None,
        None,
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 200,
            "staff": 403,
        },
    ),
    (
        "job cancel",
        "post",
        "/api/v1/jobs/{m.open_job.pk}/cancel/",
        None,
        None,
        {
            "engineer": 403,
            "other_engineer": 403,
            "other_company_member": 403,
            "member": 403,
            "admin": 200,
            "staff": 403,
        },
    ),
    ("package download", "get", "/api/v1/jobs/{m.open_job.pk}/package/", None, None, dict.fromkeys(ROLES[1:], 200)),
    (
        "package upload",
        "put",
        "/api/v1/jobs/{m.draft_job.pk}/package/",
        lambda m: {"file": package_archive()},
        "multipart",
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 403,
        },
    ),
    (
        "hidden inputs download",
        "get",
        "/api/v1/jobs/{m.open_job.pk}/hidden-inputs/",
        None,
        None,
        {
            "engineer": 403,
            "other_engineer": 403,
            "other_company_member": 403,
            "member": 200,
            "admin": 200,
            "staff": 403,
        },
    ),
    ("job bids list", "get", "/api/v1/jobs/{m.open_job.pk}/bids/", None, None, dict.fromkeys(ROLES[1:], 200)),
    (
        "bid place",
        "post",
        "/api/v1/jobs/{m.open_job.pk}/bids/",
        lambda m: {"amount": 120_000, "estimated_days": 4, "proposal": "Use BLAS."},
        "json",
        {
            "engineer": 409,
            "other_engineer": 201,
            "other_company_member": 403,
            "member": 403,
            "admin": 403,
            "staff": 403,
        },
    ),
    (
        "bid detail",
        "get",
        "/api/v1/bids/{m.bid.pk}/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "bid update",
        "patch",
        "/api/v1/bids/{m.bid.pk}/",
        lambda m: {"amount": 140_000},
        "json",
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 403,
            "staff": 403,
        },
    ),
    (
        "bid withdraw",
        "post",
        "/api/v1/bids/{m.bid.pk}/withdraw/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 403,
            "staff": 403,
        },
    ),
    (
        "bid accept",
        "post",
        "/api/v1/bids/{m.bid.pk}/accept/",
        None,
        None,
        {
            "engineer": 403,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 201,
            "staff": 403,
        },
    ),
    ("contract list", "get", "/api/v1/contracts/", None, None, dict.fromkeys(ROLES[1:], 200)),
    (
        "contract detail",
        "get",
        "/api/v1/contracts/{m.contract.pk}/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "contract cancel",
        "post",
        "/api/v1/contracts/{m.unfunded_contract.pk}/cancel/",
        None,
        None,
        {
            "engineer": 403,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 200,
            "staff": 403,
        },
    ),
    (
        "contract events",
        "get",
        "/api/v1/contracts/{m.contract.pk}/events/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "job events",
        "get",
        "/api/v1/jobs/{m.open_job.pk}/events/",
        None,
        None,
        {
            "engineer": 403,
            "other_engineer": 403,
            "other_company_member": 403,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "submission list",
        "get",
        "/api/v1/contracts/{m.contract.pk}/submissions/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "submission create",
        "post",
        "/api/v1/contracts/{m.contract.pk}/submissions/",
        lambda m: {"file": candidate_upload(), "notes": "v2"},
        "multipart",
        {
            "engineer": 201,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 403,
            "staff": 403,
        },
    ),
    (
        "submission detail",
        "get",
        "/api/v1/submissions/{m.submission.pk}/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "candidate download",
        "get",
        "/api/v1/submissions/{m.submission.pk}/candidate/",
        None,
        None,
        {
            "engineer": 200,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 200,
        },
    ),
    (
        "members list",
        "get",
        "/api/v1/organizations/{org}/members/",
        None,
        None,
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 200,
            "admin": 200,
            "staff": 404,
        },
    ),
    (
        "member add",
        "post",
        "/api/v1/organizations/{org}/members/",
        _new_colleague,
        "json",
        {
            "engineer": 404,
            "other_engineer": 404,
            "other_company_member": 404,
            "member": 403,
            "admin": 201,
            "staff": 404,
        },
    ),
]

CASES = [
    pytest.param(name, method, path, body, fmt, role, {"anonymous": 401, **expected}.get(role), id=f"{name}-{role}")
    for name, method, path, body, fmt, expected in MATRIX
    for role in ROLES
]


@pytest.mark.parametrize("name,method,path,body,fmt,role,expected", CASES)
def test_permission_matrix(market, api_client_for, name, method, path, body, fmt, role, expected):
    client = api_client_for(market.user(role))
    url = path.format(m=market, org=market.admin.memberships.get().organization_id)
    kwargs = {}
    if body is not None:
        kwargs = {"data": body(market), "format": fmt}
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == expected, (response.status_code, getattr(response, "data", None))
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "fields"}


BID_VISIBILITY = {"engineer": 1, "other_engineer": 0, "other_company_member": 0, "member": 1, "admin": 1, "staff": 1}


@pytest.mark.parametrize("role,visible", BID_VISIBILITY.items())
def test_no_engineer_sees_another_engineers_bid(market, api_client_for, role, visible):
    response = api_client_for(market.user(role)).get(f"/api/v1/jobs/{market.open_job.pk}/bids/")
    amounts = [bid["amount"] for bid in response.json()["results"]]
    assert amounts == [market.bid.amount] * visible


def test_job_list_shows_bid_count_not_amounts(market, api_client_for):
    response = api_client_for(market.other_engineer).get("/api/v1/jobs/")
    listed = {job["id"]: job for job in response.json()["results"]}
    assert listed[market.open_job.pk]["bid_count"] == 1
    assert "150000" not in response.content.decode()
    assert market.draft_job.pk not in listed
