"""Operator roles: what a platform operator may do, checked in the services that do it (the admin only
hides what a role may not use).

- ``support``: reads everything and may re-run verifications; moves no money.
- ``payments operator``: the money actions (retry a provider operation, refund a remainder, freeze or
  unfreeze an escrow, rule on a dispute that releases or withholds money).
Superusers hold every role. A role is a Django group of the same name (created by a migration), so
operators are managed in the admin like any permission.
"""

from __future__ import annotations

from common.errors import NotPermitted

from .models import User

SUPPORT = "support"
PAYMENTS_OPERATOR = "payments operator"
ROLES = (SUPPORT, PAYMENTS_OPERATOR)
# A payments operator can do everything support can.
_IMPLIED_BY = {SUPPORT: (SUPPORT, PAYMENTS_OPERATOR), PAYMENTS_OPERATOR: (PAYMENTS_OPERATOR,)}


def operator_has_role(*, user: User | None, role: str) -> bool:
    if role not in _IMPLIED_BY:
        raise ValueError(f"unknown operator role {role!r}")
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return False
    if user.account_type != User.AccountType.OPERATOR:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name__in=_IMPLIED_BY[role]).exists()


def operator_role_require(*, user: User | None, role: str) -> None:
    """Raise ``NotPermitted`` (403, code ``operator_role_required``) unless ``user`` holds ``role``."""
    if not operator_has_role(user=user, role=role):
        raise NotPermitted(f"This action needs the {role!r} operator role.", code="operator_role_required")


# Apps whose rows operators read; support reads all of them, the payments operator too.
OPERATED_APPS = ("accounts", "jobs", "payments", "verification", "notifications", "common")


def operator_groups_ensure(**kwargs) -> None:
    """Make both role groups and give them view permission on every operated model (run after each
    ``migrate``, once the permissions exist). Money stays behind the services' role checks."""
    from django.contrib.auth.models import Group, Permission

    view = Permission.objects.filter(content_type__app_label__in=OPERATED_APPS, codename__startswith="view_")
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*view)
