"""The Celery app of verification hosts: `celery -A verification.worker worker -Q verify.<class>`.

It configures itself from the environment (broker URL only) and never loads Django, so a
verification host runs untrusted code without any database or payment credentials.
"""

import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_init

from . import host

VAR_DIR = Path(os.environ.get("SPEEDPROOF_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")

app = Celery("speedproof-verification", broker=BROKER_URL)
app.conf.update(
    broker_transport_options=(
        {
            "data_folder_in": str(VAR_DIR / "broker"),
            "data_folder_out": str(VAR_DIR / "broker"),
            "processed_folder": str(VAR_DIR / "broker-processed"),
            "control_folder": str(VAR_DIR / "broker-control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
        if BROKER_URL.startswith("filesystem")
        else {"visibility_timeout": 3 * 3600}
    ),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


# A platform that cannot be reached (restarting, not up yet) gets the run again after 2, 4, ... 60 s, for about
# eight minutes; after that the platform's watchdog requeues runs that were never started or went silent.
UNREACHABLE_RETRIES = 12
# A re-verification refused to this host (it verified the original) goes back on the queue for another host
# after this delay. With no other host it keeps waiting: the platform renews its message when the token ages.
EXCLUDED_RETRY_SECONDS = int(os.environ.get("VERIFICATION_EXCLUDED_RETRY_SECONDS", "60"))


@app.task(
    bind=True,
    name="verification.execute_run",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=UNREACHABLE_RETRIES,
)
def execute_run(
    self, run_id: int, token: str, base_url: str, artifacts: dict | None = None, **_later_fields
) -> str | None:
    # ``**_later_fields``: a platform newer than this host may add fields to the message; the run
    # must still be carried out (upgrade hosts before the platform).
    try:
        return host.execute_run(run_id=run_id, token=token, base_url=base_url, announced=artifacts)
    except host.RunRejected:
        return None  # the platform moved on (requeued, finished, expired): nothing to do
    except host.HostExcluded as error:
        # Waiting for another host is not a failure: the limit is kept one above the retries so far.
        raise self.retry(exc=error, countdown=EXCLUDED_RETRY_SECONDS, max_retries=self.request.retries + 1) from error
    except host.PlatformUnreachable as error:
        raise self.retry(exc=error, countdown=min(60, 2 ** (self.request.retries + 1))) from error


@worker_init.connect
def plan_sequential_looks(**kwargs) -> None:
    """Look plans are computed once per budget and cached per process: plan the usual budgets before
    the pool forks, so no run pays for it between its timed runs."""
    from .runner import stats

    for budget in os.environ.get("VERIFICATION_PLANNED_BUDGETS", "40,8").split(","):
        if budget.strip():
            stats.plan_looks(int(budget))
