"""Registering, reading, changing and rotating webhook endpoints through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Membership
from common.models import AuditEvent
from notifications.models import WebhookEndpoint
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, StaffFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_webhooks")]
ENDPOINTS = "/api/v1/webhooks/endpoints/"


def _register(client, url, **fields):
    return client.post(ENDPOINTS, {"url": url, "event_types": ["*"], **fields}, format="json")


def test_a_company_admin_registers_an_endpoint_and_sees_the_secret_once(api_client_for, receiver):
    admin = CompanyAdminFactory()
    client = api_client_for(admin)
    created = _register(client, receiver.url, description="ERP", event_types=["bid.placed", "contract.funded"])
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["owner"] == {"type": "organization", "id": admin.memberships.get().organization_id}
    assert body["event_types"] == ["bid.placed", "contract.funded"]
    assert body["status"] == "enabled"
    listed = client.get(ENDPOINTS).json()["results"]
    assert [item["id"] for item in listed] == [body["id"]]
    shown = client.get(f"{ENDPOINTS}{body['id']}/")
    assert "secret" not in shown.json() and body["secret"] not in shown.content.decode()
    assert body["secret"] not in str(list(AuditEvent.objects.values_list("data", flat=True)))


def test_replaying_the_create_never_shows_the_secret_again(api_client_for, receiver):
    client = api_client_for(EngineerFactory())
    first = client.post(
        ENDPOINTS, {"url": receiver.url, "event_types": ["*"]}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    replay = client.post(
        ENDPOINTS, {"url": receiver.url, "event_types": ["*"]}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert first.status_code == 201
    assert replay.status_code == 409
    assert first.json()["secret"] not in replay.content.decode()
    assert WebhookEndpoint.objects.count() == 1


def test_an_engineer_owns_their_endpoints_and_nobody_else_sees_them(api_client_for, receiver):
    engineer, other_engineer, admin = EngineerFactory(), EngineerFactory(), CompanyAdminFactory()
    created = _register(api_client_for(engineer), receiver.url).json()
    assert created["owner"] == {"type": "user", "id": engineer.pk}
    for outsider in (other_engineer, admin):
        client = api_client_for(outsider)
        assert client.get(ENDPOINTS).json()["results"] == []
        assert client.get(f"{ENDPOINTS}{created['id']}/").status_code == 404
        assert client.patch(f"{ENDPOINTS}{created['id']}/", {"description": "x"}, format="json").status_code == 404
        assert client.delete(f"{ENDPOINTS}{created['id']}/").status_code == 404
        assert client.post(f"{ENDPOINTS}{created['id']}/rotate-secret/").status_code == 404


def test_company_members_who_are_not_admins_cannot_register_or_see_endpoints(api_client_for, receiver):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    member = CompanyMemberFactory(organization=organization)
    _register(api_client_for(admin), receiver.url)
    refused = _register(api_client_for(member), receiver.url)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert api_client_for(member).get(ENDPOINTS).json()["results"] == []
    owner = CompanyAdminFactory(organization=organization, role=Membership.Role.OWNER)
    assert len(api_client_for(owner).get(ENDPOINTS).json()["results"]) == 1


def test_operators_register_no_endpoints(api_client_for, receiver):
    assert _register(api_client_for(StaffFactory()), receiver.url).status_code == 403


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url_refused"),
        ({"url": "http://10.0.0.8/hook"}, "webhook_url_refused"),
        ({"url": "gopher://127.0.0.1/x"}, "webhook_url_scheme"),
        ({"url": "http://u:p@127.0.0.1/x"}, "webhook_url_invalid"),
        ({"event_types": ["bid.exploded"]}, "validation_failed"),
        ({"event_types": []}, "validation_failed"),
        ({"url": "x" * 2001}, "validation_failed"),
    ],
)
def test_bad_registrations_are_4xx_with_stable_codes(api_client_for, receiver, fields, code):
    response = api_client_for(EngineerFactory()).post(
        ENDPOINTS, {"url": receiver.url, "event_types": ["*"], **fields}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert WebhookEndpoint.objects.count() == 0


def test_https_is_required_when_the_setting_says_so(api_client_for, settings):
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    response = _register(api_client_for(EngineerFactory()), "http://127.0.0.1:9/hook")
    assert response.json()["error"]["code"] == "webhook_url_scheme"


def test_update_and_delete(api_client_for, receiver):
    engineer = EngineerFactory()
    client = api_client_for(engineer)
    endpoint_id = _register(client, receiver.url).json()["id"]
    changed = client.patch(
        f"{ENDPOINTS}{endpoint_id}/", {"event_types": ["bid.accepted"], "description": "mine"}, format="json"
    )
    assert changed.status_code == 200
    assert changed.json()["event_types"] == ["bid.accepted"] and changed.json()["description"] == "mine"
    refused = client.patch(f"{ENDPOINTS}{endpoint_id}/", {"url": "http://192.168.0.1/"}, format="json")
    assert refused.status_code == 400
    assert client.patch(f"{ENDPOINTS}{endpoint_id}/", {"enabled": False}, format="json").json()["status"] == "disabled"
    assert client.patch(f"{ENDPOINTS}{endpoint_id}/", {"enabled": True}, format="json").json()["status"] == "enabled"
    assert client.delete(f"{ENDPOINTS}{endpoint_id}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert AuditEvent.objects.filter(verb="webhook_endpoint_deleted", object_id=str(endpoint_id)).exists()


def test_rotation_returns_the_new_secret_once_and_keeps_the_old_one_for_the_overlap(api_client_for, receiver):
    client = api_client_for(EngineerFactory())
    created = _register(client, receiver.url).json()
    rotated = client.post(f"{ENDPOINTS}{created['id']}/rotate-secret/")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    expires = timezone.datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert abs(expires - (timezone.now() + timedelta(hours=24))) < timedelta(minutes=1)
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    assert (endpoint.secret, endpoint.previous_secret) == (new_secret, created["secret"])
    assert new_secret not in client.get(f"{ENDPOINTS}{created['id']}/").content.decode()
