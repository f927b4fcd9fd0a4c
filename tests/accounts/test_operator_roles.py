"""Operator roles are Django groups checked in services: support reads, the payments operator moves money."""

import pytest
from django.contrib.auth.models import Group

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_has_role, operator_role_require
from common.errors import NotPermitted
from tests.factories import CompanyAdminFactory, StaffFactory

pytestmark = pytest.mark.django_db


def _operator(*groups: str):
    user = StaffFactory(is_superuser=False)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def test_both_role_groups_exist_after_migrate_and_can_view_the_operated_models():
    for role in (SUPPORT, PAYMENTS_OPERATOR):
        codenames = set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))
        assert {"view_contract", "view_escrow", "view_verificationrun", "view_user"} <= codenames
        assert not any(c.startswith(("change_", "delete_", "add_")) for c in codenames)


def test_support_cannot_move_money_and_the_payments_operator_can_do_both():
    support, payments = _operator(SUPPORT), _operator(PAYMENTS_OPERATOR)
    assert operator_has_role(user=support, role=SUPPORT)
    assert not operator_has_role(user=support, role=PAYMENTS_OPERATOR)
    assert operator_has_role(user=payments, role=PAYMENTS_OPERATOR)
    assert operator_has_role(user=payments, role=SUPPORT)
    with pytest.raises(NotPermitted) as refused:
        operator_role_require(user=support, role=PAYMENTS_OPERATOR)
    assert refused.value.code == "operator_role_required"


def test_superusers_hold_every_role_and_market_parties_none():
    assert operator_has_role(user=StaffFactory(), role=PAYMENTS_OPERATOR)
    assert not operator_has_role(user=_operator(), role=SUPPORT)
    company_staff = CompanyAdminFactory(is_staff=True, is_superuser=True)
    assert not operator_has_role(user=company_staff, role=SUPPORT)
    assert not operator_has_role(user=None, role=SUPPORT)
    inactive = _operator(PAYMENTS_OPERATOR)
    inactive.is_active = False
    assert not operator_has_role(user=inactive, role=SUPPORT)
