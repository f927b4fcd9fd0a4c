"""Helpers shared by the payments services: locking, moves checked against the state map, queueing on commit,
and the namespace of the idempotency keys we send to the provider."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from common.errors import NotFound, ValidationFailed
from common.transitions import transition_apply

from ..models import ConnectedAccount, Escrow, PaymentsInstallation
from ..states import ESCROW_TRANSITIONS

logger = logging.getLogger(__name__)


S = Escrow.Status
FULL_BPS = 10_000
STALE_CLAIM = timedelta(minutes=5)


def _task_send(task_name: str, args: tuple, *, countdown: int | None = None) -> None:
    from kombu.exceptions import OperationalError

    from .. import tasks

    try:
        getattr(tasks, task_name).apply_async(args=args, countdown=countdown)
    except OperationalError:
        # Broker down: the row is committed, and the beat tasks (payouts_retry_payable,
        # webhook_events_redrive) pick it up later. Never fail the request that stored it.
        logger.exception("could not enqueue %s%r; the beat task will retry it", task_name, args)


def _enqueue(task_name: str, *args) -> None:
    """Enqueue a payments task once the current transaction commits (immediately when there is none)."""
    transaction.on_commit(lambda: _task_send(task_name, args))


def _lock(escrow_id: int) -> Escrow:
    try:
        return Escrow.objects.select_for_update().get(pk=escrow_id)
    except Escrow.DoesNotExist:
        raise NotFound("No such escrow.", code="escrow_not_found") from None


def _signal_kwargs(escrow: Escrow, **extra) -> dict:
    return {"escrow_id": escrow.pk, "reference": escrow.reference, **extra}


def _move(escrow: Escrow, to: str, *, actor=None, verb: str, data: dict | None = None, fields=()) -> None:
    transition_apply(escrow, to=to, allowed=ESCROW_TRANSITIONS, actor=actor, verb=verb, data=data, update_fields=fields)


PAYEE_DISCONNECTED_REASON = (
    "payout_account_disconnected: the engineer's payout account disconnected from the platform; "
    "the transfer waits until they onboard again."
)


def _payee_payable(user_id: int) -> bool:
    return ConnectedAccount.objects.filter(
        user_id=user_id, transfers_active=True, status=ConnectedAccount.Status.CONNECTED
    ).exists()


def _payee_wait_reason(user_id: int) -> str:
    """Why a transfer to this engineer waits ("" while they simply have not finished onboarding)."""
    disconnected = ConnectedAccount.objects.filter(user_id=user_id, status=ConnectedAccount.Status.DISCONNECTED)
    return PAYEE_DISCONNECTED_REASON if disconnected.exists() else ""


def _transfer_group(escrow: Escrow) -> str:
    return f"escrow_{escrow.pk}"


def idempotency_namespace() -> str:
    """What every key we send to the provider is prefixed with: `<PAYMENTS_IDEMPOTENCY_PREFIX>:<installation id>`.

    The prefix names the deployment (two environments sharing a Stripe account never replay each other's objects);
    the installation id is random per database, made at first use, so two databases never share keys either.
    Both are stable, so a retry within one deployment sends the very same key.
    """
    row = PaymentsInstallation.objects.filter(pk=1).first()
    if row is None:
        try:
            with transaction.atomic():
                row = PaymentsInstallation.objects.create(pk=1, installation_id=secrets.token_hex(8))
        except IntegrityError:  # another process made it first
            row = PaymentsInstallation.objects.get(pk=1)
    return f"{settings.PAYMENTS_IDEMPOTENCY_PREFIX}:{row.installation_id}"


OPERATOR_NOTE_MAX = 1000


def _operator_note_require(note: str | None) -> str:
    """An operator's money action carries a note saying why (kept in the audit record)."""
    note = (note or "").strip()
    if not note:
        raise ValidationFailed("A note saying why is required.", code="note_required", fields={"note": ["required"]})
    if len(note) > OPERATOR_NOTE_MAX:
        raise ValidationFailed(
            f"The note is longer than {OPERATOR_NOTE_MAX} characters.", code="note_too_long", fields={"note": ["long"]}
        )
    return note
