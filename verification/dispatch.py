"""Sends runs to the verification hosts' queues. The message carries the run id, a per-run token, the
internal API's address and the digests of the run's files — never their contents, database or payment
credentials."""

from celery import current_app
from django.conf import settings
from kombu.exceptions import ConnectionError as BrokerConnectionError
from kombu.exceptions import OperationalError

# What a send raises when the broker cannot be reached: Celery turns the transport's connection
# errors into OperationalError; sockets can still fail on their own before that (OSError).
BROKER_ERRORS = (OperationalError, BrokerConnectionError, OSError)


def send_run(dispatch) -> None:
    current_app.send_task(
        "verification.execute_run",
        kwargs={
            "run_id": dispatch.run_id,
            "token": dispatch.token,
            "base_url": settings.INTERNAL_API_BASE_URL,
            "artifacts": dispatch.artifacts,
        },
        queue=dispatch.queue,
        soft_time_limit=dispatch.time_limit_seconds,
        time_limit=dispatch.time_limit_seconds + 60,
    )
