from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        from .providers.factory import provider_settings_check
        from .services.fees import refund_fee_policy

        provider_settings_check()
        refund_fee_policy()  # an unknown REFUND_FEE_POLICY refuses to start
