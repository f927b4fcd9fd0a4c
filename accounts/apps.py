from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import receivers, schema  # noqa: F401 - membership changes; the OpenAPI description of tokens
        from .operators import operator_groups_ensure

        # Every app's post_migrate, not only ours: each app's permissions exist only after its own.
        post_migrate.connect(operator_groups_ensure, dispatch_uid="accounts.operator_groups")
