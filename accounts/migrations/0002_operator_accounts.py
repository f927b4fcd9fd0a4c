"""Operators and engineer profiles belong to their own account types.

Superusers and staff made before operators had their own account type became engineers (the default) and could
bid: those who are not a market party (no organization, no engineer profile) become operators. Company accounts
could give themselves a public engineer profile: only engineer accounts keep one.
"""

from django.db import migrations
from django.db.models import Q


def staff_to_operators(apps, schema_editor) -> None:
    User = apps.get_model("accounts", "User")
    User.objects.filter(Q(is_staff=True) | Q(is_superuser=True)).exclude(account_type="operator").filter(
        memberships__isnull=True, engineer_profile__isnull=True
    ).update(account_type="operator")


def non_engineer_profiles_delete(apps, schema_editor) -> None:
    EngineerProfile = apps.get_model("accounts", "EngineerProfile")
    EngineerProfile.objects.exclude(user__account_type="engineer").delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunPython(staff_to_operators, migrations.RunPython.noop),
        migrations.RunPython(non_engineer_profiles_delete, migrations.RunPython.noop),
    ]
