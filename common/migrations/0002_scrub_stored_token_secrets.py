"""Answers of API-token creation stored for idempotent replays held the token's secret; drop it."""

from django.db import migrations


def scrub_token_secrets(apps, schema_editor):
    IdempotencyRecord = apps.get_model("common", "IdempotencyRecord")
    for record in IdempotencyRecord.objects.filter(endpoint__endswith="/tokens/").iterator():
        if isinstance(record.response_body, dict) and "token" in record.response_body:
            record.response_body = {name: value for name, value in record.response_body.items() if name != "token"}
            record.save(update_fields=["response_body"])


class Migration(migrations.Migration):
    dependencies = [("common", "0001_initial")]

    operations = [migrations.RunPython(scrub_token_secrets, migrations.RunPython.noop)]
