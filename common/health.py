import dataclasses

from django.conf import settings
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from kombu import Connection


@dataclasses.dataclass
class CeleryBroker(HealthCheck):
    """The broker accepts connections (a worker's liveness is a separate concern)."""

    def run(self) -> None:
        try:
            with Connection(
                settings.CELERY_BROKER_URL,
                transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                connect_timeout=2,
            ) as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as exc:
            raise ServiceUnavailable("Celery broker unreachable") from exc


class SpeedproofHealthView(HealthCheckView):
    checks = ("health_check.checks.Database", "health_check.checks.Cache", CeleryBroker)
