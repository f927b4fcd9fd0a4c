import secrets

from django.db import migrations, models


def installation_create(apps, schema_editor):
    """Made here so every process of a migrated database reads the same id (services makes it if it is missing)."""
    installation = apps.get_model("payments", "PaymentsInstallation")
    installation.objects.get_or_create(pk=1, defaults={"installation_id": secrets.token_hex(8)})


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_checkout_customers"),
    ]

    operations = [
        migrations.CreateModel(
            name="PaymentsInstallation",
            fields=[
                ("singleton", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("installation_id", models.CharField(max_length=32, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RunPython(installation_create, migrations.RunPython.noop),
    ]
