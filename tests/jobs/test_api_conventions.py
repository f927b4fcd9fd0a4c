import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Bid, Job
from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory, open_job
from tests.factories.jobs import CRITERIA, job_request_body

pytestmark = pytest.mark.django_db


def test_validation_errors_use_the_one_error_shape(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    response = client.post("/api/v1/jobs/", job_request_body(budget_min="lots"), format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert "budget_min" in error["fields"]


def test_criteria_errors_are_field_level(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    bad = {**CRITERIA, "tiers": [{"speedup": 1.5, "fraction": 0.5}]}
    response = client.post("/api/v1/jobs/", job_request_body(criteria=bad), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_criteria"
    assert "criteria.tiers[0].fraction" in response.json()["error"]["fields"]


def test_unknown_routes_and_methods_use_the_error_shape(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    assert client.get("/api/v1/jobs/999999/").json()["error"]["code"] == "job_not_found"
    assert client.delete("/api/v1/jobs/").json()["error"]["code"] == "method_not_allowed"
    assert api_client_for().get("/api/v1/jobs/").json()["error"]["code"] == "not_authenticated"


def test_idempotency_key_replays_the_same_answer(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    body = job_request_body()
    first = client.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    second = client.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1


def test_idempotency_key_with_another_body_is_422(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    client.post("/api/v1/jobs/", job_request_body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = client.post("/api/v1/jobs/", job_request_body(title="Other"), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_idempotent_bid_placement(api_client_for):
    job, engineer = open_job(), EngineerFactory()
    client = api_client_for(engineer)
    body = {"amount": 5_000, "estimated_days": 2, "proposal": "p"}
    for _ in range(2):
        response = client.post(f"/api/v1/jobs/{job.pk}/bids/", body, format="json", HTTP_IDEMPOTENCY_KEY="bid-1")
        assert response.status_code == 201
    assert Bid.objects.filter(job=job).count() == 1


def test_failed_request_does_not_burn_the_key(api_client_for):
    client = api_client_for(CompanyAdminFactory())
    body = job_request_body(hardware_class="nonexistent")
    assert client.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k2").status_code == 400
    assert client.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k2").status_code == 400


def _ids(response):
    return [job["id"] for job in response.json()["results"]]


def test_pagination_is_stable_and_complete(api_client_for):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    JobFactory.create_batch(12, organization=organization, created_by=admin, status=Job.Status.OPEN)
    client = api_client_for(admin)
    seen = []
    for page in (1, 2, 3):
        seen += _ids(client.get(f"/api/v1/jobs/?page_size=5&page={page}&ordering=budget_max"))
    assert len(seen) == len(set(seen)) == 12


def test_filters(api_client_for):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    cheap = JobFactory(
        organization=organization,
        created_by=admin,
        status=Job.Status.OPEN,
        budget_min=100,
        budget_max=200,
        title="Quantize the encoder",
    )
    gpu = JobFactory(
        organization=organization,
        created_by=admin,
        status=Job.Status.OPEN,
        hardware_class="gpu-h100",
        budget_min=50_000,
        budget_max=90_000,
    )
    draft = JobFactory(organization=organization, created_by=admin)
    client = api_client_for(admin)
    assert _ids(client.get("/api/v1/jobs/?status=draft")) == [draft.pk]
    assert _ids(client.get("/api/v1/jobs/?hardware_class=gpu-h100")) == [gpu.pk]
    assert _ids(client.get("/api/v1/jobs/?budget_at_most=1000")) == [cheap.pk]
    assert set(_ids(client.get("/api/v1/jobs/?budget_at_least=60000"))) == {gpu.pk, draft.pk}
    assert _ids(client.get("/api/v1/jobs/?search=quantize")) == [cheap.pk]


def test_job_list_query_count_does_not_grow_with_page_size(api_client_for):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    jobs = JobFactory.create_batch(50, organization=organization, created_by=admin, status=Job.Status.OPEN)
    for job in jobs[:10]:
        Bid.objects.create(job=job, engineer=EngineerFactory(), amount=10, estimated_days=1, proposal="p")
    client = api_client_for(EngineerFactory())
    client.get("/api/v1/me")  # the token's first use records last_used_at once
    client.get("/api/v1/jobs/?page_size=1")  # and the first list remembers whether the engineer sees unlisted jobs
    counts = {}
    for size in (5, 50):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/v1/jobs/?page_size={size}")
        assert len(response.json()["results"]) == size
        counts[size] = len(queries)
    assert counts[5] == counts[50]


@pytest.mark.parametrize("path", ["/api/v1/bids/", "/api/v1/contracts/"])
def test_other_lists_query_count_does_not_grow(api_client_for, path):
    from tests.factories import funded_contract

    admin = CompanyAdminFactory()
    engineer = EngineerFactory()
    for _ in range(6):
        funded_contract(admin=admin, engineer=engineer)
    client = api_client_for(admin)
    client.get("/api/v1/me")  # the token's first use records last_used_at once
    client.get(f"{path}?page_size=1")  # and the first list remembers the admin's organizations
    counts = []
    for size in (2, 6):
        with CaptureQueriesContext(connection) as queries:
            assert len(client.get(f"{path}?page_size={size}").json()["results"]) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_throttling_answers_429_with_a_code(api_client_for, monkeypatch):
    from rest_framework.settings import api_settings

    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "user", "3/min")
    client = api_client_for(CompanyAdminFactory())
    responses = [client.get("/api/v1/me") for _ in range(4)]
    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert responses[-1].json()["error"]["code"] == "throttled"
    assert 0 < int(responses[-1]["Retry-After"]) <= 61


def test_anonymous_clients_are_throttled_by_address(monkeypatch):
    from rest_framework.settings import api_settings
    from rest_framework.test import APIClient

    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "anon", "2/min")
    body = {"email": "x@x.test", "password": "a long passphrase", "name": "X"}
    statuses = [APIClient().post("/api/v1/auth/signup/engineer/", body, format="json").status_code for _ in range(3)]
    assert statuses[-1] == 429


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/jobs/" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_health_checks_database_cache_and_broker(client):
    response = client.get("/health/?format=json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert {"Database", "Cache", "CeleryBroker"} <= {name.split("(")[0] for name in body}


def test_openapi_schema_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yml"))
    assert "/api/v1/contracts/{id}/fund/" in (tmp_path / "schema.yml").read_text()
