from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from . import receivers, schema  # noqa: F401 - membership changes; the OpenAPI description of tokens
