"""Membership changes that race each other in real PostgreSQL transactions never leave an organization ownerless."""

import pytest

from accounts.models import Membership
from accounts.services import membership_change_role, membership_remove
from tests.factories import CompanyAdminFactory, CompanyMemberFactory
from tests.races import race


def _two_owners():
    first = CompanyAdminFactory(role=Membership.Role.OWNER)
    organization = first.memberships.get().organization
    second = CompanyAdminFactory(organization=organization, role=Membership.Role.OWNER)
    return organization, first, second


def _owner_count(organization) -> int:
    return Membership.objects.filter(organization=organization, role=Membership.Role.OWNER).count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_owners_demoting_each_other_leave_one_owner(attempt):
    organization, first, second = _two_owners()
    outcomes = race(
        lambda: membership_change_role(actor=first, membership=second.memberships.get(), role="admin"),
        lambda: membership_change_role(actor=second, membership=first.memberships.get(), role="admin"),
    )
    # The loser is refused either because it lost its ownership first or because it would remove the last owner.
    assert outcomes[0] == "done" and outcomes[1] in {"last_owner", "permission_denied"}, outcomes
    assert _owner_count(organization) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_owners_removing_each_other_leave_one_owner(attempt):
    organization, first, second = _two_owners()
    outcomes = race(
        lambda: membership_remove(actor=first, membership=second.memberships.get()),
        lambda: membership_remove(actor=second, membership=first.memberships.get()),
    )
    assert outcomes[0] == "done" and outcomes[1] in {"last_owner", "not_found", "permission_denied"}, outcomes
    assert _owner_count(organization) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_owners_leaving_at_once_leave_one_owner(attempt):
    organization, first, second = _two_owners()
    outcomes = race(
        lambda: membership_remove(actor=first, membership=first.memberships.get()),
        lambda: membership_remove(actor=second, membership=second.memberships.get()),
    )
    assert outcomes == ["done", "last_owner"]
    assert _owner_count(organization) == 1


@pytest.mark.django_db
def test_a_member_may_leave_but_the_last_owner_may_not(api_client_for):
    organization, owner, _ = _two_owners()
    member = CompanyMemberFactory(organization=organization)
    url = f"/api/v1/organizations/{organization.pk}/members/"
    left = api_client_for(member).delete(f"{url}{member.memberships.get().pk}/")
    assert left.status_code == 204
    co_owner = Membership.objects.get(organization=organization, role="owner", user__pk__gt=owner.pk)
    assert api_client_for(owner).delete(f"{url}{co_owner.pk}/").status_code == 204
    refused = api_client_for(owner).delete(f"{url}{owner.memberships.get().pk}/")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "last_owner")
    demoted = api_client_for(owner).patch(f"{url}{owner.memberships.get().pk}/", {"role": "admin"}, format="json")
    assert (demoted.status_code, demoted.json()["error"]["code"]) == (409, "last_owner")
    assert _owner_count(organization) == 1
