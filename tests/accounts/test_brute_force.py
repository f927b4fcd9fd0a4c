"""Password guessing on the login forms and token guessing on the API are cut off after a few failures."""

import pytest
from django.test import Client

from accounts.services import api_token_create
from tests.factories import CompanyAdminFactory, StaffFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"  # the factories' password


def _login(client: Client, url: str, email: str, password: str):
    return client.post(url, {"username": email, "password": password}, REMOTE_ADDR="198.51.100.7")


@pytest.mark.parametrize("url", ["/api-auth/login/", "/admin/login/"])
def test_the_eleventh_guess_is_locked_out_even_with_the_right_password(settings, url):
    user = StaffFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, url, user.email, "wrong password!").status_code == 200  # the form again, with an error
    assert _login(client, url, user.email.upper(), "wrong password!").status_code == 429  # the lockout begins
    locked = _login(client, url, user.email, PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert PASSWORD not in locked.content.decode()


def test_the_right_password_works_below_the_limit_and_other_accounts_are_not_locked(settings):
    victim, other = StaffFactory(), StaffFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "/admin/login/", victim.email, "wrong password!")
    assert _login(Client(), "/admin/login/", other.email, PASSWORD).status_code == 302
    for _ in range(2):
        _login(client, "/admin/login/", victim.email, "wrong password!")
    assert _login(Client(), "/admin/login/", other.email, PASSWORD).status_code == 302


def test_repeated_bad_tokens_from_one_address_are_throttled(api_client_for, settings):
    user = CompanyAdminFactory()
    good = api_token_create(user=user, name="good").secret
    client = api_client_for()
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    for attempt in range(settings.BEARER_AUTH_FAILURES_PER_MINUTE):
        response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer spk_guess{attempt}", **attacker)
        assert response.status_code == 401
    throttled = client.get("/api/v1/me", HTTP_AUTHORIZATION="Bearer spk_guess-again", **attacker)
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "too_many_failed_authentications"
    assert "spk_guess" not in throttled.content.decode()
    # A found token is no use from the throttled address: guessing right must not be observable.
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good}", **attacker).status_code == 429
    elsewhere = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good}", REMOTE_ADDR="192.0.2.44")
    assert elsewhere.status_code == 200 and elsewhere.json()["email"] == user.email


def test_good_tokens_do_not_count_as_failures(api_client_for, settings):
    client = api_client_for(CompanyAdminFactory())
    for _ in range(settings.BEARER_AUTH_FAILURES_PER_MINUTE + 5):
        assert client.get("/api/v1/me", REMOTE_ADDR="203.0.113.10").status_code == 200
