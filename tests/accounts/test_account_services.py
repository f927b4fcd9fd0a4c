from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken, EngineerProfile, Membership, User
from accounts.services import (
    api_token_create,
    api_token_revoke,
    company_signup,
    engineer_signup,
    membership_add,
    membership_change_role,
    membership_remove,
    token_hash,
)
from common.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_company_signup_makes_the_user_owner():
    user, organization = company_signup(
        email="Boss@Example.test", password="a long passphrase", name="Boss", organization_name="Acme AI"
    )
    assert user.email == "boss@example.test"
    assert organization.slug == "acme-ai"
    assert Membership.objects.get(user=user).role == Membership.Role.OWNER


def test_engineer_signup_creates_a_profile():
    user = engineer_signup(email="e@x.test", password="a long passphrase", name="E", skills=["cuda"])
    assert user.account_type == User.AccountType.ENGINEER
    assert EngineerProfile.objects.get(user=user).skills == ["cuda"]


def test_signup_refuses_duplicates_and_weak_passwords():
    engineer_signup(email="e@x.test", password="a long passphrase", name="E")
    with pytest.raises(Conflict):
        engineer_signup(email="E@x.test", password="a long passphrase", name="E")
    with pytest.raises(ValidationFailed) as error:
        engineer_signup(email="f@x.test", password="password12", name="F")
    assert error.value.code == "weak_password"


def test_tokens_are_stored_hashed_and_revocable():
    user = UserFactory()
    issued = api_token_create(user=user, name="ci")
    stored = ApiToken.objects.get(pk=issued.token.pk)
    assert stored.token_hash == token_hash(issued.secret)
    assert issued.secret not in (stored.token_hash, stored.prefix)
    api_token_revoke(user=user, token_id=stored.pk)
    stored.refresh_from_db()
    assert not stored.is_usable()
    with pytest.raises(NotFound):
        api_token_revoke(user=UserFactory(), token_id=stored.pk)


def test_token_expiry_must_be_in_the_future():
    with pytest.raises(ValidationFailed):
        api_token_create(user=UserFactory(), name="old", expires_at=timezone.now() - timedelta(hours=1))


def test_admins_add_members_but_members_do_not():
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    colleague = UserFactory()
    membership = membership_add(actor=admin, organization=organization, email=colleague.email, role="member")
    assert membership.role == "member"
    with pytest.raises(NotPermitted):
        membership_add(actor=colleague, organization=organization, email=UserFactory().email, role="member")
    with pytest.raises(Conflict):
        membership_add(actor=admin, organization=organization, email=colleague.email, role="member")


def test_engineers_cannot_join_companies():
    admin = CompanyAdminFactory()
    with pytest.raises(ValidationFailed):
        membership_add(
            actor=admin, organization=admin.memberships.get().organization, email=EngineerFactory().email, role="member"
        )


def test_only_owners_grant_ownership_and_one_owner_remains():
    owner = CompanyAdminFactory(role=Membership.Role.OWNER)
    organization = owner.memberships.get().organization
    admin = CompanyAdminFactory(organization=organization)
    member = CompanyMemberFactory(organization=organization)
    member_ship = member.memberships.get()
    with pytest.raises(NotPermitted):
        membership_change_role(actor=admin, membership=member_ship, role="owner")
    membership_change_role(actor=owner, membership=member_ship, role="admin")
    with pytest.raises(Conflict):
        membership_remove(actor=owner, membership=owner.memberships.get())
    with pytest.raises(NotPermitted):
        membership_remove(actor=admin, membership=owner.memberships.get())
