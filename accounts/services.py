import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from common.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from common.services import audit_record

from . import signals
from .models import ApiToken, EngineerProfile, Membership, Organization, OrganizationInvite, User
from .selectors import membership_role


def _user_create(*, email: str, password: str, name: str, account_type: str) -> User:
    email = email.strip().lower()
    try:
        validate_password(password)
    except DjangoValidationError as exc:
        raise ValidationFailed(
            "Password is too weak.", code="weak_password", fields={"password": exc.messages}
        ) from exc
    if User.objects.filter(email=email).exists():
        raise Conflict("An account with this email already exists.", code="email_taken", fields={"email": ["taken"]})
    try:
        with transaction.atomic():
            return User.objects.create_user(email=email, password=password, name=name, account_type=account_type)
    except IntegrityError:
        raise Conflict(
            "An account with this email already exists.", code="email_taken", fields={"email": ["taken"]}
        ) from None


def market_party_require(*, user: User) -> None:
    """Operators see every bid and every escrow: they may never be a party (bid, join a company) themselves."""
    if user.account_type == User.AccountType.OPERATOR:
        raise NotPermitted("Operator accounts cannot act as a market party.", code="operator_cannot_trade")


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def company_signup(
    *, email: str, password: str, name: str, organization_name: str = "", invite_token: str = ""
) -> tuple[User, Organization]:
    """A company account with a new organization it owns, or, with `invite_token`, joining the inviting
    organization with the invite's role (the signup email must be the invited address)."""
    if invite_token:
        # The invite is locked (and checked) before the account exists: a refused invite creates nothing, and of
        # two signups with one token the second waits here and finds it used.
        invite = _invite_lock_open(token=invite_token)
        _invite_email_require(invite, email=email)
        user = _user_create(email=email, password=password, name=name, account_type=User.AccountType.COMPANY)
        _invite_join(invite, user=user)
        return user, invite.organization
    user = _user_create(email=email, password=password, name=name, account_type=User.AccountType.COMPANY)
    organization = Organization.objects.create(name=organization_name, slug=_unique_slug(organization_name))
    Membership.objects.create(organization=organization, user=user, role=Membership.Role.OWNER)
    audit_record(actor=user, verb="organization_created", obj=organization, to_state="active")
    return user, organization


@transaction.atomic
def engineer_signup(
    *, email: str, password: str, name: str, headline: str = "", skills=(), hardware_expertise=()
) -> User:
    user = _user_create(email=email, password=password, name=name, account_type=User.AccountType.ENGINEER)
    EngineerProfile.objects.create(
        user=user, headline=headline, skills=list(skills), hardware_expertise=list(hardware_expertise)
    )
    return user


PROFILE_FIELDS = ("headline", "skills", "hardware_expertise")


def engineer_profile_update(*, user: User, **fields) -> EngineerProfile:
    """Only engineer accounts have a profile: a company or operator account can never make itself one."""
    if user.account_type != User.AccountType.ENGINEER:
        raise ValidationFailed(
            "Only engineer accounts have an engineer profile.",
            code="not_an_engineer",
            fields={name: ["engineer accounts only"] for name in fields if name in PROFILE_FIELDS},
        )
    profile, _ = EngineerProfile.objects.get_or_create(user=user)
    for key, value in fields.items():
        if key in PROFILE_FIELDS:
            setattr(profile, key, value)
    profile.save()
    return profile


@transaction.atomic
def me_update(*, user: User, **fields) -> User:
    """The caller's own account: the name, and for engineers the profile; all of it or none."""
    profile_fields = {name: value for name, value in fields.items() if name in PROFILE_FIELDS}
    if profile_fields:
        engineer_profile_update(user=user, **profile_fields)
    if "name" in fields:
        user.name = fields["name"]
        user.save(update_fields=["name"])
    return user


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> IssuedToken:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed(
            "Expiry must be in the future.", code="token_expiry_past", fields={"expires_at": ["in the past"]}
        )
    secret = settings.API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=secret[:12], token_hash=token_hash(secret), expires_at=expires_at
    )
    return IssuedToken(token=token, secret=secret)


def api_token_revoke(*, user: User, token_id: int) -> ApiToken:
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(user=user, pk=token_id).first()
        if token is None:
            raise NotFound("No such token.")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
    return token


def _require_org_admin(*, actor: User, organization: Organization) -> str:
    role = membership_role(user=actor, organization_id=organization.pk)
    if role not in Membership.ADMIN_ROLES:
        raise NotPermitted("Only the organization's owners and admins can manage members.")
    return role


@transaction.atomic
def membership_add(*, actor: User, organization: Organization, email: str, role: str) -> Membership:
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    actor_role = _require_org_admin(actor=actor, organization=organization)
    if role not in Membership.Role.values:
        raise ValidationFailed("Unknown role.", code="invalid_role", fields={"role": ["unknown"]})
    if role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
        raise NotPermitted("Only owners can add owners.")
    user = User.objects.filter(email=email.strip().lower()).first()
    if user is None:
        raise NotFound("No account with this email.", code="user_not_found", fields={"email": ["unknown"]})
    market_party_require(user=user)
    if user.account_type == User.AccountType.ENGINEER:
        raise ValidationFailed(
            "Engineer accounts cannot join a company.", code="engineer_cannot_join", fields={"email": ["engineer"]}
        )
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": role}
    )
    if not created:
        raise Conflict("This user is already a member.", code="already_member")
    audit_record(actor=actor, verb="member_added", obj=membership, to_state=role)
    return membership


def _membership_lock(membership: Membership) -> tuple[Organization, Membership]:
    """Lock the organization, then re-read the membership: every membership change of one organization queues
    here, so the owner count and the actor's role each change sees are current (two owners demoting each other
    at once can no longer both see a second owner)."""
    organization = Organization.objects.select_for_update().get(pk=membership.organization_id)
    current = Membership.objects.filter(pk=membership.pk, organization=organization).first()
    if current is None:
        raise NotFound("No such member.", code="member_not_found")
    return organization, current


@transaction.atomic
def membership_change_role(*, actor: User, membership: Membership, role: str) -> Membership:
    organization, membership = _membership_lock(membership)
    actor_role = _require_org_admin(actor=actor, organization=organization)
    if role not in Membership.Role.values:
        raise ValidationFailed("Unknown role.", code="invalid_role", fields={"role": ["unknown"]})
    if Membership.Role.OWNER in (role, membership.role) and actor_role != Membership.Role.OWNER:
        raise NotPermitted("Only owners can grant or remove the owner role.")
    _ensure_an_owner_remains(membership, new_role=role)
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(actor=actor, verb="member_role_changed", obj=membership, from_state=previous, to_state=role)
    return membership


@transaction.atomic
def membership_remove(*, actor: User, membership: Membership) -> None:
    """Owners and admins remove members; any member may leave. Nobody removes the organization's last owner."""
    organization, membership = _membership_lock(membership)
    leaving = membership.user_id == actor.pk
    if not leaving:
        actor_role = _require_org_admin(actor=actor, organization=organization)
        if membership.role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
            raise NotPermitted("Only owners can remove an owner.")
    _ensure_an_owner_remains(membership, new_role=None)
    audit_record(
        actor=actor, verb="member_left" if leaving else "member_removed", obj=membership, from_state=membership.role
    )
    membership.delete()


def _ensure_an_owner_remains(membership: Membership, *, new_role: str | None) -> None:
    """Call with the organization row locked (`_membership_lock`)."""
    if membership.role != Membership.Role.OWNER or new_role == Membership.Role.OWNER:
        return
    other_owners = Membership.objects.filter(
        organization_id=membership.organization_id, role=Membership.Role.OWNER
    ).exclude(pk=membership.pk)
    if not other_owners.exists():
        raise Conflict("An organization must keep at least one owner.", code="last_owner")


# Organization invites. Lock order: Organization, then the invite (as every membership change locks the
# organization first).

INVITE_CREATED = "invite_created"
INVITE_REVOKED = "invite_revoked"
INVITE_ACCEPTED = "invite_accepted"


@dataclass(frozen=True)
class IssuedInvite:
    invite: OrganizationInvite
    token: str


def _require_org_owner(*, actor: User, organization: Organization) -> None:
    if membership_role(user=actor, organization_id=organization.pk) != Membership.Role.OWNER:
        raise NotPermitted("Only the organization's owners can invite or revoke invites.", code="owner_required")


def _invitee_require_company(user: User | None) -> None:
    """Who may join a company: an existing account must be a company account (as for `membership_add`)."""
    if user is None:
        return
    if user.account_type == User.AccountType.OPERATOR:
        raise NotPermitted(
            "Operator accounts cannot act as a market party.",
            code="operator_cannot_trade",
            fields={"email": ["operator"]},
        )
    if user.account_type == User.AccountType.ENGINEER:
        raise ValidationFailed(
            "Engineer accounts cannot join a company.", code="engineer_cannot_join", fields={"email": ["engineer"]}
        )


@transaction.atomic
def invite_create(*, actor: User, organization: Organization, email: str, role: str) -> IssuedInvite:
    """An owner invites an address with a role. The token is returned once; only its sha256 is stored. An open
    invite to the same address is revoked: the newest token is the one that works."""
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    _require_org_owner(actor=actor, organization=organization)
    if role not in Membership.Role.values:
        raise ValidationFailed("Unknown role.", code="invalid_role", fields={"role": ["unknown"]})
    email = email.strip().lower()
    if Membership.objects.filter(organization=organization, user__email=email).exists():
        raise Conflict("This address already belongs to a member.", code="already_member", fields={"email": ["member"]})
    _invitee_require_company(User.objects.filter(email=email).first())
    now = timezone.now()
    for previous in OrganizationInvite.objects.select_for_update().filter(
        organization=organization, email=email, accepted_at__isnull=True, revoked_at__isnull=True
    ):
        previous.revoked_at = now
        previous.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            verb=INVITE_REVOKED,
            obj=previous,
            from_state=previous.status_at(now),
            to_state="revoked",
            data={"superseded": True},
        )
    token = settings.ORGANIZATION_INVITE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    invite = OrganizationInvite.objects.create(
        organization=organization,
        email=email,
        role=role,
        token_hash=token_hash(token),
        invited_by=actor,
        created_at=now,
        expires_at=now + timedelta(hours=settings.ORGANIZATION_INVITE_TTL_HOURS),
    )
    audit_record(actor=actor, verb=INVITE_CREATED, obj=invite, to_state="pending", data={"email": email, "role": role})
    signals.organization_invite_created.send(sender=OrganizationInvite, invite_id=invite.pk, token=token)
    return IssuedInvite(invite=invite, token=token)


@transaction.atomic
def invite_revoke(*, actor: User, invite: OrganizationInvite) -> OrganizationInvite:
    """Owners revoke an invite that was not accepted; revoking a revoked invite changes nothing."""
    organization = Organization.objects.select_for_update().get(pk=invite.organization_id)
    _require_org_owner(actor=actor, organization=organization)
    invite = OrganizationInvite.objects.select_for_update().filter(pk=invite.pk, organization=organization).first()
    if invite is None:
        raise NotFound("No such invite.", code="invite_not_found")
    if invite.accepted_at is not None:
        raise Conflict("This invite was already accepted.", code="invite_already_used")
    if invite.revoked_at is None:
        previous = invite.status_at()
        invite.revoked_at = timezone.now()
        invite.save(update_fields=["revoked_at"])
        audit_record(actor=actor, verb=INVITE_REVOKED, obj=invite, from_state=previous, to_state="revoked")
    return invite


@transaction.atomic
def invite_accept(*, user: User, token: str) -> Membership:
    """The invited person, signed in with the invited address, joins the organization with the invite's role.

    The account's email must be the invited address (case-insensitive): the token proves the invite email was
    received, the address match proves it is the invited person's account, so a forwarded or leaked link
    cannot put another account into the organization."""
    invite = _invite_lock_open(token=token)
    _invite_email_require(invite, email=user.email)
    _invitee_require_company(user)
    return _invite_join(invite, user=user)


def _invite_lock_open(*, token: str) -> OrganizationInvite:
    """The invite for `token`, locked with its organization, if it can still be accepted."""
    found = (
        OrganizationInvite.objects.filter(token_hash=token_hash(token or "")).values("pk", "organization_id").first()
    )
    if found is None:
        raise NotFound("No invite with this token.", code="invite_not_found", fields={"token": ["unknown"]})
    Organization.objects.select_for_update().get(pk=found["organization_id"])
    invite = OrganizationInvite.objects.select_for_update().select_related("organization").get(pk=found["pk"])
    status = invite.status_at()
    if status == OrganizationInvite.Status.ACCEPTED:
        raise Conflict("This invite was already used.", code="invite_already_used")
    if status == OrganizationInvite.Status.REVOKED:
        raise Conflict("This invite was revoked.", code="invite_revoked")
    if status == OrganizationInvite.Status.EXPIRED:
        raise Conflict("This invite has expired; ask an owner for a new one.", code="invite_expired")
    return invite


def _invite_email_require(invite: OrganizationInvite, *, email: str) -> None:
    if email.strip().lower() != invite.email:
        raise NotPermitted(
            "This invite is for another email address.", code="invite_email_mismatch", fields={"email": ["mismatch"]}
        )


def _invite_join(invite: OrganizationInvite, *, user: User) -> Membership:
    """Call with the organization and the invite locked (`_invite_lock_open`)."""
    membership, created = Membership.objects.get_or_create(
        organization=invite.organization, user=user, defaults={"role": invite.role}
    )
    if not created:
        raise Conflict("You are already a member of this organization.", code="already_member")
    invite.accepted_at = timezone.now()
    invite.accepted_by = user
    invite.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(actor=user, verb=INVITE_ACCEPTED, obj=invite, from_state="pending", to_state="accepted")
    audit_record(actor=user, verb="member_added", obj=membership, to_state=invite.role, data={"invite_id": invite.pk})
    return membership
