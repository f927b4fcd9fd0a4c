from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_create
from tests.factories import CompanyAdminFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_company_signup_returns_a_token_once_that_works():
    client = APIClient()
    response = client.post(
        "/api/v1/auth/signup/company/",
        {"email": "cto@acme.test", "password": "a long passphrase", "name": "CTO", "organization_name": "Acme"},
        format="json",
    )
    assert response.status_code == 201
    secret = response.json()["token"]["token"]
    assert response.json()["memberships"][0]["role"] == "owner"
    assert "password" not in response.json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/me").json()["email"] == "cto@acme.test"
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert all("token" not in token for token in listed)
    assert secret not in str(listed)


def test_engineer_signup_and_profile_update(api_client_for):
    response = APIClient().post(
        "/api/v1/auth/signup/engineer/",
        {"email": "e@x.test", "password": "a long passphrase", "name": "E", "skills": ["triton"]},
        format="json",
    )
    assert response.status_code == 201
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']['token']}")
    body = client.patch("/api/v1/me", {"headline": "GEMM whisperer"}, format="json").json()
    assert body["engineer_profile"]["headline"] == "GEMM whisperer"
    assert body["engineer_profile"]["skills"] == ["triton"]


def test_signup_duplicate_email_is_409_with_code():
    body = {"email": "e@x.test", "password": "a long passphrase", "name": "E"}
    APIClient().post("/api/v1/auth/signup/engineer/", body, format="json")
    response = APIClient().post("/api/v1/auth/signup/engineer/", body, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer", "Bearer a b", "Bearer spk_revoked", "Bearer spk_expired"],
)
def test_bad_tokens_are_401_and_never_echoed(header):
    user = UserFactory()
    revoked = api_token_create(user=user, name="r")
    ApiToken.objects.filter(pk=revoked.token.pk).update(revoked_at=timezone.now())
    expired = api_token_create(user=user, name="e", expires_at=timezone.now() + timedelta(seconds=1))
    ApiToken.objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    header = header.replace("spk_revoked", revoked.secret).replace("spk_expired", expired.secret)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert revoked.secret not in response.content.decode()
    assert expired.secret not in response.content.decode()


def test_token_create_list_revoke(api_client_for):
    client = api_client_for(UserFactory())
    created = client.post("/api/v1/tokens/", {"name": "laptop"}, format="json")
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["id"]
    assert client.delete(f"/api/v1/tokens/{token_id}/").json()["revoked_at"] is not None
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert other.get("/api/v1/me").status_code == 401


def test_a_token_secret_is_never_stored_for_an_idempotent_replay(api_client_for):
    from common.models import IdempotencyRecord

    client = api_client_for(UserFactory())
    created = client.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="token-1")
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["id"]
    record = IdempotencyRecord.objects.get(key="token-1")
    assert record.response_status == 201
    assert secret not in str(record.response_body) and record.response_body["id"] == token_id
    replay = client.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="token-1")
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "idempotency_secret_not_replayable"
    assert replay.json()["error"]["fields"] == {"id": token_id}
    assert secret not in replay.content.decode()
    assert ApiToken.objects.filter(user=record.user).count() == 2  # the client's own token and this one


def test_secrets_stored_before_are_scrubbed_by_the_migration():
    import importlib

    from django.apps import apps

    from common.models import IdempotencyRecord

    user = UserFactory()
    stored = IdempotencyRecord.objects.create(
        user=user,
        key="old",
        endpoint="/api/v1/tokens/",
        request_fingerprint="f",
        response_status=201,
        response_body={"id": 7, "name": "ci", "token": "spk_old_secret"},
    )
    migration = importlib.import_module("common.migrations.0002_scrub_stored_token_secrets")
    migration.scrub_token_secrets(apps, None)
    stored.refresh_from_db()
    assert stored.response_body == {"id": 7, "name": "ci"}


def test_member_management_api(api_client_for):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    client = api_client_for(admin)
    newcomer = UserFactory()
    added = client.post(f"/api/v1/organizations/{organization.pk}/members/", {"email": newcomer.email}, format="json")
    assert added.status_code == 201
    member_id = added.json()["id"]
    changed = client.patch(
        f"/api/v1/organizations/{organization.pk}/members/{member_id}/", {"role": "admin"}, format="json"
    )
    assert changed.json()["role"] == "admin"
    assert client.delete(f"/api/v1/organizations/{organization.pk}/members/{member_id}/").status_code == 204
    unknown = client.post(f"/api/v1/organizations/{organization.pk}/members/", {"email": "ghost@x.test"}, format="json")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "user_not_found")


def test_engineer_public_profile(api_client_for):
    from tests.factories import EngineerFactory

    engineer = EngineerFactory()
    body = api_client_for(CompanyAdminFactory()).get(f"/api/v1/engineers/{engineer.pk}/").json()
    assert body["id"] == engineer.pk and body["jobs_passed"] == 0
    assert "email" not in body
    assert api_client_for(CompanyAdminFactory()).get("/api/v1/engineers/999999/").status_code == 404
