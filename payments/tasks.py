"""Thin Celery tasks: they take ids, call one service, and are safe to run twice."""

from celery import shared_task

from common.errors import RetryableError

from . import services

RETRY = {
    "autoretry_for": (RetryableError,),
    "retry_backoff": 2,
    "retry_backoff_max": 600,
    "max_retries": 10,
    "retry_jitter": True,
}


@shared_task(**RETRY)
def payment_operation_execute(operation_id: int) -> None:
    services.payment_operation_execute(operation_id=operation_id)


@shared_task(**RETRY)
def webhook_event_process(event_id: int) -> None:
    services.webhook_event_process(event_id=event_id)


@shared_task(**RETRY)
def escrow_funding_cancel(escrow_id: int) -> None:
    services.escrow_funding_cancel(escrow_id=escrow_id)


@shared_task(**RETRY)
def funding_intent_cancel(payment_intent_id: str) -> None:
    services.funding_intent_cancel(payment_intent_id=payment_intent_id)


@shared_task(**RETRY)
def escrow_checkout_close(escrow_id: int) -> None:
    services.escrow_checkout_close(escrow_id=escrow_id)


@shared_task(**RETRY)
def escrow_fees_book(escrow_id: int) -> None:
    services.escrow_fees_book(escrow_id=escrow_id)


@shared_task
def escrows_expire_unfunded() -> int:
    return services.escrows_expire_unfunded()


@shared_task
def payouts_retry_payable() -> int:
    return services.payouts_retry_payable()


@shared_task
def payments_reconcile() -> int:
    return services.payments_reconcile()


@shared_task
def webhook_events_redrive() -> int:
    return services.webhook_events_redrive()


@shared_task
def webhook_events_drain() -> int:
    return services.webhook_events_drain()
