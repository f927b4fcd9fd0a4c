"""Liveness (`/health/live/`: the process answers, nothing else) and readiness (`/health/ready/`, also `/health/`:
the database, the cache and the broker answer).

Load balancers and container health checks probe liveness: a dependency outage should take a process out of
rotation through readiness, not get it restarted. Readiness reuses each process's probe results for
HEALTH_PROBE_CACHE_SECONDS, so frequent probing does not turn into load on the dependencies.
"""

import dataclasses
import threading
import time

from django.conf import settings
from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_safe
from health_check import HealthCheck
from health_check.base import HealthCheckResult
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


@require_safe
def liveness(request):
    response = JsonResponse({"status": "ok"})
    add_never_cache_headers(response)
    return response


class _ProbeResults:
    """The last probe results of this process, reused until they are HEALTH_PROBE_CACHE_SECONDS old."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: list[HealthCheckResult] | None = None
        self._taken_at = 0.0

    def fresh(self) -> list[HealthCheckResult] | None:
        with self._lock:
            if self._results is not None and time.monotonic() - self._taken_at < settings.HEALTH_PROBE_CACHE_SECONDS:
                return self._results
        return None

    def store(self, results: list[HealthCheckResult]) -> None:
        with self._lock:
            self._results, self._taken_at = results, time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._results = None


probe_results = _ProbeResults()


class SpeedproofHealthView(HealthCheckView):
    checks = ("health_check.checks.Database", "health_check.checks.Cache", CeleryBroker)

    async def get(self, request, *args, **kwargs):
        self.reused_results = probe_results.fresh()
        response = await super().get(request, *args, **kwargs)
        if self.reused_results is None:
            probe_results.store(self.results)
        return response

    def get_checks(self):
        if self.reused_results is not None:
            return (_Reported(result) for result in self.reused_results)
        return super().get_checks()


@dataclasses.dataclass
class _Reported(HealthCheck):
    """A probe result this process took moments ago, reported as if taken now."""

    result: HealthCheckResult

    def run(self) -> None:
        raise NotImplementedError("get_result answers without probing")

    async def get_result(self, executor=None) -> HealthCheckResult:
        return self.result
