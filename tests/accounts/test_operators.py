"""Operators run the platform; they are never a party to the market (no bids, no organizations, no profile)."""

import importlib

import pytest
from django.apps import apps
from django.core.management import call_command

from accounts.models import EngineerProfile, Membership, User
from jobs.models import Job
from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_createsuperuser_makes_an_operator_without_an_engineer_profile(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long operator passphrase")
    call_command("createsuperuser", interactive=False, email="root@example.test", verbosity=0)
    root = User.objects.get(email="root@example.test")
    assert (root.account_type, root.is_staff, root.is_superuser) == (User.AccountType.OPERATOR, True, True)
    assert not EngineerProfile.objects.filter(user=root).exists()
    assert User.objects.create_superuser(email="ops@example.test", password="x").account_type == "operator"


def test_an_operator_cannot_bid(api_client_for):
    job = JobFactory(status=Job.Status.OPEN)
    response = api_client_for(StaffFactory()).post(
        f"/api/v1/jobs/{job.pk}/bids/",
        {"amount": 100_000, "estimated_days": 3, "proposal": "I run the place"},
        format="json",
    )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "operator_cannot_trade")
    assert not job.bids.exists()


def test_an_operator_cannot_join_an_organization(api_client_for):
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    operator = StaffFactory()
    response = api_client_for(admin).post(
        f"/api/v1/organizations/{organization.pk}/members/", {"email": operator.email}, format="json"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (403, "operator_cannot_trade")
    assert not Membership.objects.filter(user=operator).exists()


def test_the_migration_turns_staff_who_are_not_market_parties_into_operators():
    migration = importlib.import_module("accounts.migrations.0002_operator_accounts")
    root = UserFactory(account_type=User.AccountType.ENGINEER, is_staff=True, is_superuser=True)
    support = UserFactory(account_type=User.AccountType.COMPANY, is_staff=True)
    staff_company_admin = CompanyAdminFactory(is_staff=True)
    staff_engineer = EngineerFactory(is_staff=True)
    plain_engineer = EngineerFactory()
    migration.staff_to_operators(apps, None)
    types = {user.pk: user.account_type for user in User.objects.all()}
    assert types[root.pk] == types[support.pk] == User.AccountType.OPERATOR
    assert types[staff_company_admin.pk] == User.AccountType.COMPANY
    assert types[staff_engineer.pk] == types[plain_engineer.pk] == User.AccountType.ENGINEER
