"""Thin tasks: ids in, one service call; each is safe to run twice."""

from celery import shared_task

from . import emails, services


# Retries are Celery's own (a countdown message per retry); the service bounds them by the three-day window,
# so no retry count is needed. A countdown message lost with its worker is picked up by the sweep below.
@shared_task(bind=True, name="notifications.tasks.delivery_send", max_retries=None)
def delivery_send(self, delivery_id: int) -> None:
    outcome = services.delivery_attempt(delivery_id=delivery_id)
    if outcome.retry_in_seconds is not None:
        raise self.retry(countdown=outcome.retry_in_seconds)


@shared_task(name="notifications.tasks.deliveries_enqueue_overdue")
def deliveries_enqueue_overdue() -> int:
    return services.deliveries_enqueue_overdue()


@shared_task(name="notifications.tasks.endpoint_disabled_notify")
def endpoint_disabled_notify(endpoint_id: int) -> bool:
    return services.endpoint_disabled_notify(endpoint_id=endpoint_id)


@shared_task(name="notifications.tasks.email_send", autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_send(notification_id: int) -> bool:
    return emails.email_send(notification_id=notification_id)


@shared_task(name="notifications.tasks.emails_enqueue_stale")
def emails_enqueue_stale() -> int:
    return emails.emails_enqueue_stale()
