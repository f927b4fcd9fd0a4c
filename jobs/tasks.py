"""Thin tasks: ids in, one service call; each is safe to run twice."""

from celery import shared_task
from django.utils import timezone

from .models import Job
from .services import contracts, disputes, events
from .services.jobs import jobs_expire


@shared_task(name="jobs.tasks.jobs_expire_overdue")
def jobs_expire_overdue() -> int:
    """Expire open jobs left unawarded past their award window."""
    candidates = Job.objects.filter(status=Job.Status.OPEN, bidding_deadline__lt=timezone.now())
    return jobs_expire(job_ids=candidates.values_list("pk", flat=True))


@shared_task(name="jobs.tasks.contract_release_due")
def contract_release_due(contract_id: int) -> None:
    contracts.contract_release_earned(contract_id=contract_id)


@shared_task(name="jobs.tasks.contract_settle_due")
def contract_settle_due(contract_id: int) -> None:
    contracts.contract_settle(contract_id=contract_id, reason="attempts exhausted")


@shared_task(name="jobs.tasks.contracts_release_due")
def contracts_release_due() -> list[int]:
    return contracts.contracts_release_due()


@shared_task(name="jobs.tasks.contracts_settle_due")
def contracts_settle_due() -> list[int]:
    return contracts.contracts_settle_due()


@shared_task(name="jobs.tasks.contracts_remind_review_closing")
def contracts_remind_review_closing() -> int:
    """Email companies whose review window closes within 24 hours; once per window however often it runs."""
    return events.contracts_remind_review_closing()


@shared_task(name="jobs.tasks.disputes_escalate_overdue")
def disputes_escalate_overdue() -> list[int]:
    """Mark disputes without a ruling after DISPUTE_ESCALATE_AFTER_HOURS as escalated; a second run finds none."""
    return disputes.disputes_escalate_overdue()
