from django.db.models import QuerySet

from common.errors import NotFound
from common.http_cache import version_counters_bump, version_counters_get, versioned_get_or_compute

from .models import ApiToken, EngineerProfile, Membership, Organization, OrganizationInvite, User

MEMBERSHIPS_CACHE_SECONDS = 3600


def membership_role(*, user: User, organization_id: int) -> str | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, organization_id=organization_id).values_list("role", flat=True).first()


def user_is_org_admin(*, user: User, organization_id: int) -> bool:
    return membership_role(user=user, organization_id=organization_id) in Membership.ADMIN_ROLES


def user_is_org_member(*, user: User, organization_id: int) -> bool:
    return membership_role(user=user, organization_id=organization_id) is not None


def _organizations_counter(user_id: int) -> str:
    return f"accounts:memberships:{user_id}"


def user_organization_ids(*, user: User) -> list[int]:
    """The organizations the user belongs to; remembered under a counter that every change to the user's
    memberships bumps on commit (accounts.receivers), read before the query, as the response cache does."""
    if not user.is_authenticated:
        return []
    ids = versioned_get_or_compute(
        f"accounts:organization-ids:{user.pk}",
        version_counters_get([_organizations_counter(user.pk)]),
        lambda: list(Membership.objects.filter(user=user).values_list("organization_id", flat=True)),
        MEMBERSHIPS_CACHE_SECONDS,
    )
    return list(ids)


def user_memberships_changed(*, user_id: int) -> None:
    """Call (inside the change's transaction) whenever a membership of the user is added or removed."""
    version_counters_bump([_organizations_counter(user_id)])


def organization_members(*, organization: Organization) -> QuerySet[Membership]:
    return organization.memberships.select_related("user").order_by("id")


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    return user.api_tokens.order_by("-created_at", "-id")


def engineer_profile_get(*, user_id: int) -> EngineerProfile:
    profile = (
        EngineerProfile.objects.select_related("user")
        .filter(user_id=user_id, user__is_active=True, user__account_type=User.AccountType.ENGINEER)
        .first()
    )
    if profile is None:
        raise NotFound("No such engineer.", code="engineer_not_found")
    return profile


def invite_list(*, organization: Organization) -> QuerySet[OrganizationInvite]:
    """Every invite of the organization, newest first (accepted, revoked and expired ones too)."""
    return organization.invites.select_related("invited_by", "accepted_by").order_by("-created_at", "-id")


def invite_get(*, organization: Organization, invite_id: int) -> OrganizationInvite:
    invite = organization.invites.filter(pk=invite_id).first()
    if invite is None:
        raise NotFound("No such invite.", code="invite_not_found")
    return invite
