"""Only engineer accounts have an engineer profile: nobody else can make one, and none is shown for anybody else."""

import importlib

import pytest
from django.apps import apps

from accounts.models import EngineerProfile, User
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory
from tests.factories.accounts import EngineerProfileFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("make_user", [CompanyAdminFactory, StaffFactory], ids=["company", "operator"])
def test_profile_fields_are_refused_for_accounts_that_are_not_engineers(api_client_for, make_user):
    user = make_user(name="Before")
    response = api_client_for(user).patch("/api/v1/me", {"name": "After", "skills": ["cuda"]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "not_an_engineer" and "skills" in error["fields"]
    assert not EngineerProfile.objects.filter(user=user).exists()
    user.refresh_from_db()
    assert user.name == "Before"  # the request is refused as a whole
    renamed = api_client_for(user).patch("/api/v1/me", {"name": "After"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["engineer_profile"] is None


def test_an_engineer_updates_their_profile(api_client_for):
    engineer = EngineerFactory()
    body = api_client_for(engineer).patch("/api/v1/me", {"skills": ["simd"], "headline": "Vectorizer"}, format="json")
    assert body.status_code == 200
    assert body.json()["engineer_profile"]["skills"] == ["simd"]
    assert EngineerProfile.objects.get(user=engineer).headline == "Vectorizer"


def test_public_profiles_are_for_engineers_only(api_client_for):
    company_user = CompanyAdminFactory()
    EngineerProfileFactory(user=company_user)  # made through the hole this closes
    viewer = api_client_for(EngineerFactory())
    response = viewer.get(f"/api/v1/engineers/{company_user.pk}/")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "engineer_not_found")
    engineer = EngineerFactory()
    assert viewer.get(f"/api/v1/engineers/{engineer.pk}/").status_code == 200


def test_the_migration_removes_profiles_of_accounts_that_are_not_engineers():
    migration = importlib.import_module("accounts.migrations.0002_operator_accounts")
    company_user, engineer = CompanyAdminFactory(), EngineerFactory()
    EngineerProfileFactory(user=company_user)
    migration.non_engineer_profiles_delete(apps, None)
    assert list(EngineerProfile.objects.values_list("user__account_type", flat=True)) == [User.AccountType.ENGINEER]
    assert EngineerProfile.objects.get().user == engineer
