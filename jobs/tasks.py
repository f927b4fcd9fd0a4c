from celery import shared_task
from django.utils import timezone

from .models import Job
from .services.jobs import job_expire


@shared_task(name="jobs.tasks.jobs_expire_overdue")
def jobs_expire_overdue() -> int:
    """Expire open jobs left unawarded past their award window; running it twice changes nothing."""
    expired = 0
    for job_id in Job.objects.filter(status=Job.Status.OPEN, bidding_deadline__lt=timezone.now()).values_list("pk", flat=True):
        if job_expire(job_id=job_id) is not None:
            expired += 1
    return expired
