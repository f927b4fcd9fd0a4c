"""Organization invites: an owner invites an address with a role; the invitee joins by signing up with the token or
by accepting it with the invited address's existing account; invites expire, can be revoked and work once."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, OrganizationInvite, User
from accounts.services import invite_accept, invite_create, token_hash
from common.models import AuditEvent
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, StaffFactory, UserFactory
from tests.races import race

PASSWORD = "a long passphrase"


def _owner():
    owner = CompanyAdminFactory(role=Membership.Role.OWNER)
    return owner, owner.memberships.get().organization


def _invites_url(organization) -> str:
    return f"/api/v1/organizations/{organization.pk}/invites/"


def _invite(api_client_for, owner, organization, email="new@acme.test", role="admin"):
    response = api_client_for(owner).post(_invites_url(organization), {"email": email, "role": role}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _error(response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.json())
    assert response.json()["error"]["code"] == code, response.json()


def _signup(token: str, email: str = "new@acme.test", **extra):
    body = {"email": email, "password": PASSWORD, "name": "New", "invite_token": token, **extra}
    return APIClient().post("/api/v1/auth/signup/company/", body, format="json")


def _accept(api_client_for, user, token: str):
    return api_client_for(user).post("/api/v1/invites/accept/", {"token": token}, format="json")


@pytest.mark.django_db
def test_an_owner_invites_and_the_invitee_signs_up_into_the_organization(api_client_for, settings):
    settings.ORGANIZATION_INVITE_TTL_HOURS = 48
    owner, organization = _owner()
    created = _invite(api_client_for, owner, organization, email=" New@Acme.test ", role="admin")
    assert created["email"] == "new@acme.test" and created["role"] == "admin" and created["status"] == "pending"
    assert created["token"].startswith("spi_") and created["invited_by"]["id"] == owner.pk
    stored = OrganizationInvite.objects.get(pk=created["id"])
    assert stored.token_hash == token_hash(created["token"]) and created["token"] not in stored.token_hash
    assert abs((stored.expires_at - stored.created_at) - timedelta(hours=48)) < timedelta(seconds=1)

    response = _signup(created["token"], email="NEW@acme.test")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [(m["organization"]["id"], m["role"]) for m in body["memberships"]] == [(organization.pk, "admin")]
    user = User.objects.get(email="new@acme.test")
    assert user.account_type == User.AccountType.COMPANY
    assert Membership.objects.filter(user=user).count() == 1  # no organization of its own
    stored.refresh_from_db()
    assert (stored.accepted_by, stored.status_at()) == (user, "accepted") and stored.accepted_at is not None
    verbs = set(AuditEvent.objects.filter(object_type="accounts.organizationinvite").values_list("verb", flat=True))
    assert verbs == {"invite_created", "invite_accepted"}
    # The signup's token works for the new member, who now sees the organization.
    member = APIClient()
    member.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']['token']}")
    assert member.get(f"/api/v1/organizations/{organization.pk}/").status_code == 200


@pytest.mark.django_db
def test_an_existing_account_accepts_with_the_invited_address(api_client_for):
    owner, organization = _owner()
    invitee = UserFactory(email="existing@acme.test")
    token = _invite(api_client_for, owner, organization, email="Existing@acme.test", role="member")["token"]
    response = _accept(api_client_for, invitee, token)
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "organization": {
            "id": organization.pk,
            "name": organization.name,
            "slug": organization.slug,
            "created_at": response.json()["organization"]["created_at"],
        },
        "role": "member",
    }
    assert Membership.objects.get(organization=organization, user=invitee).role == "member"
    listed = api_client_for(owner).get(_invites_url(organization)).json()["results"]
    assert [(i["email"], i["status"]) for i in listed] == [("existing@acme.test", "accepted")]


@pytest.mark.django_db
def test_signing_up_without_an_invite_still_needs_an_organization_name_and_not_both():
    missing = APIClient().post(
        "/api/v1/auth/signup/company/", {"email": "a@b.test", "password": PASSWORD, "name": "A"}, format="json"
    )
    _error(missing, 400, "validation_failed")
    assert "organization_name" in missing.json()["error"]["fields"]
    owner, organization = _owner()
    token = invite_create(actor=owner, organization=organization, email="new@acme.test", role="member").token
    both = _signup(token, organization_name="Mine")
    _error(both, 400, "validation_failed")
    assert not User.objects.filter(email="new@acme.test").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Membership.Role.ADMIN, Membership.Role.MEMBER])
def test_only_owners_invite_and_revoke(api_client_for, role):
    owner, organization = _owner()
    other = CompanyAdminFactory(organization=organization, role=role)
    refused = api_client_for(other).post(_invites_url(organization), {"email": "x@acme.test"}, format="json")
    _error(refused, 403, "owner_required")
    invite = _invite(api_client_for, owner, organization)
    _error(api_client_for(other).post(f"{_invites_url(organization)}{invite['id']}/revoke/"), 403, "owner_required")
    # Admins may read the list (they manage members); plain members may not.
    listed = api_client_for(other).get(_invites_url(organization))
    assert listed.status_code == (200 if role == Membership.Role.ADMIN else 403)
    stranger = CompanyAdminFactory(role=Membership.Role.OWNER)
    for response in (
        api_client_for(stranger).get(_invites_url(organization)),
        api_client_for(stranger).post(_invites_url(organization), {"email": "y@acme.test"}, format="json"),
        api_client_for(stranger).post(f"{_invites_url(organization)}{invite['id']}/revoke/"),
    ):
        _error(response, 404, "not_found")
    assert OrganizationInvite.objects.count() == 1
    assert OrganizationInvite.objects.get().revoked_at is None


@pytest.mark.django_db
def test_inviting_a_member_is_a_conflict_and_engineers_or_operators_cannot_be_invited(api_client_for):
    owner, organization = _owner()
    member = CompanyMemberFactory(organization=organization, email="member@acme.test")
    url = _invites_url(organization)
    _error(api_client_for(owner).post(url, {"email": "MEMBER@acme.test"}, format="json"), 409, "already_member")
    _error(api_client_for(owner).post(url, {"email": owner.email}, format="json"), 409, "already_member")
    EngineerFactory(email="eng@x.test")
    _error(api_client_for(owner).post(url, {"email": "eng@x.test"}, format="json"), 400, "engineer_cannot_join")
    StaffFactory(email="ops@x.test")
    _error(api_client_for(owner).post(url, {"email": "ops@x.test"}, format="json"), 403, "operator_cannot_trade")
    _error(
        api_client_for(owner).post(url, {"email": "n@x.test", "role": "god"}, format="json"), 400, "validation_failed"
    )
    assert not OrganizationInvite.objects.exists() and member.memberships.count() == 1


@pytest.mark.django_db
def test_expired_invites_are_refused(api_client_for, settings):
    owner, organization = _owner()
    invite = _invite(api_client_for, owner, organization, email="late@acme.test")
    OrganizationInvite.objects.filter(pk=invite["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    _error(_signup(invite["token"], email="late@acme.test"), 409, "invite_expired")
    assert not User.objects.filter(email="late@acme.test").exists()
    late = UserFactory(email="late@acme.test")
    _error(_accept(api_client_for, late, invite["token"]), 409, "invite_expired")
    assert not Membership.objects.filter(user=late).exists()
    listed = api_client_for(owner).get(_invites_url(organization)).json()["results"]
    assert listed[0]["status"] == "expired"


@pytest.mark.django_db
def test_revoked_invites_are_refused_and_revoking_is_idempotent(api_client_for):
    owner, organization = _owner()
    invite = _invite(api_client_for, owner, organization)
    url = f"{_invites_url(organization)}{invite['id']}/revoke/"
    revoked = api_client_for(owner).post(url)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert "token" not in revoked.json()
    again = api_client_for(owner).post(url)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert AuditEvent.objects.filter(verb="invite_revoked", object_id=str(invite["id"])).count() == 1
    _error(_signup(invite["token"]), 409, "invite_revoked")
    _error(_accept(api_client_for, UserFactory(email="new@acme.test"), invite["token"]), 409, "invite_revoked")
    _error(api_client_for(owner).post(f"{_invites_url(organization)}999999/revoke/"), 404, "invite_not_found")


@pytest.mark.django_db
def test_an_invite_works_once_and_an_accepted_one_cannot_be_revoked(api_client_for):
    owner, organization = _owner()
    invite = _invite(api_client_for, owner, organization)
    assert _signup(invite["token"]).status_code == 201
    _error(_signup(invite["token"], email="new@acme.test"), 409, "invite_already_used")
    newcomer = User.objects.get(email="new@acme.test")
    _error(_accept(api_client_for, newcomer, invite["token"]), 409, "invite_already_used")
    url = f"{_invites_url(organization)}{invite['id']}/revoke/"
    _error(api_client_for(owner).post(url), 409, "invite_already_used")
    assert Membership.objects.filter(organization=organization).count() == 2


@pytest.mark.django_db
def test_an_invite_is_accepted_only_with_the_invited_address(api_client_for):
    owner, organization = _owner()
    token = _invite(api_client_for, owner, organization, email="right@acme.test")["token"]
    wrong = UserFactory(email="wrong@acme.test")
    _error(_accept(api_client_for, wrong, token), 403, "invite_email_mismatch")
    _error(_signup(token, email="other@acme.test"), 403, "invite_email_mismatch")
    assert not User.objects.filter(email="other@acme.test").exists()
    assert not Membership.objects.filter(user=wrong).exists()
    # Still open for the invited address.
    assert _signup(token, email="right@acme.test").status_code == 201


@pytest.mark.django_db
def test_unknown_tokens_and_anonymous_accepts_are_refused(api_client_for):
    _error(_signup("spi_nope"), 404, "invite_not_found")
    _error(_accept(api_client_for, UserFactory(), "spi_nope"), 404, "invite_not_found")
    _error(api_client_for(UserFactory()).post("/api/v1/invites/accept/", {}, format="json"), 400, "validation_failed")
    _error(APIClient().post("/api/v1/invites/accept/", {"token": "spi_nope"}, format="json"), 401, "not_authenticated")


@pytest.mark.django_db
def test_an_existing_member_accepting_is_a_conflict(api_client_for):
    owner, organization = _owner()
    token = invite_create(actor=owner, organization=organization, email="late@acme.test", role="admin").token
    joined = CompanyMemberFactory(organization=organization, email="late@acme.test")
    _error(_accept(api_client_for, joined, token), 409, "already_member")
    assert joined.memberships.get().role == "member"


@pytest.mark.django_db
def test_reinviting_an_address_revokes_the_earlier_token(api_client_for):
    owner, organization = _owner()
    first = _invite(api_client_for, owner, organization, role="member")
    second = _invite(api_client_for, owner, organization, role="admin")
    _error(_signup(first["token"]), 409, "invite_revoked")
    response = _signup(second["token"])
    assert response.status_code == 201 and response.json()["memberships"][0]["role"] == "admin"


@pytest.mark.django_db
def test_the_token_is_shown_once_and_never_listed(api_client_for):
    owner, organization = _owner()
    client = api_client_for(owner)
    created = _invite(api_client_for, owner, organization)
    stored = OrganizationInvite.objects.get(pk=created["id"])
    listed = client.get(_invites_url(organization))
    assert listed.status_code == 200
    assert set(listed.json()) >= {"count", "results"}
    for text in (
        listed.content.decode(),
        client.post(f"{_invites_url(organization)}{created['id']}/revoke/").content.decode(),
    ):
        assert created["token"] not in text and stored.token_hash not in text and "token" not in text
    events = AuditEvent.objects.filter(object_type="accounts.organizationinvite")
    assert created["token"] not in str(list(events.values())) and stored.token_hash not in str(list(events.values()))
    # An Idempotency-Key replay of the create does not reveal the token again.
    key = {"HTTP_IDEMPOTENCY_KEY": "invite-1"}
    body = {"email": "idem@acme.test", "role": "member"}
    first = client.post(_invites_url(organization), body, format="json", **key)
    assert first.status_code == 201 and first.json()["token"]
    replay = client.post(_invites_url(organization), body, format="json", **key)
    _error(replay, 409, "idempotency_secret_not_replayable")
    assert first.json()["token"] not in replay.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_accepts_of_one_invite_at_once_join_once(attempt):
    owner, organization = _owner()
    invitee = UserFactory(email=f"race{attempt}@acme.test")
    token = invite_create(actor=owner, organization=organization, email=invitee.email, role="admin").token
    outcomes = race(lambda: invite_accept(user=invitee, token=token), lambda: invite_accept(user=invitee, token=token))
    assert outcomes == ["done", "invite_already_used"], outcomes
    assert Membership.objects.filter(organization=organization, user=invitee).count() == 1
    assert AuditEvent.objects.filter(verb="invite_accepted").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_signups_with_one_invite_at_once_create_one_account(attempt):
    from accounts.services import company_signup

    owner, organization = _owner()
    email = f"race{attempt}@acme.test"
    token = invite_create(actor=owner, organization=organization, email=email, role="member").token

    def signup():
        company_signup(email=email, password=PASSWORD, name="N", invite_token=token)

    outcomes = race(signup, signup)
    assert outcomes == ["done", "invite_already_used"], outcomes
    assert User.objects.filter(email=email).count() == 1
    assert Membership.objects.filter(organization=organization).count() == 2
