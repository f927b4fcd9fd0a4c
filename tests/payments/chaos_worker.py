"""A stand-in Celery worker process for the SIGKILL chaos test: it runs the payout task body for one operation.

Usage: python -m tests.payments.chaos_worker MODE OPERATION_ID MARKER_FILE
MODE `pause_before` / `pause_after` writes MARKER_FILE and sleeps just before / just after the provider call
(so the test can SIGKILL it there); `run` just runs the task, as a restarted worker receiving the redelivered
(acks_late) message would; `beat` runs the payouts_retry_payable sweep instead (the other recovery path).
"""

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings.test")

import django

django.setup()

from payments import tasks  # noqa: E402
from payments.providers.offline import OfflineProvider  # noqa: E402


def main() -> None:
    mode, operation_id, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    original = OfflineProvider.transfer_create

    def paused(self, **kwargs):
        if mode == "pause_before":
            open(marker, "w").write("before")
            time.sleep(120)
        result = original(self, **kwargs)
        if mode == "pause_after":
            open(marker, "w").write("after")
            time.sleep(120)
        return result

    OfflineProvider.transfer_create = paused
    if mode == "beat":
        from datetime import timedelta

        from payments import services

        services.payouts_retry_payable(older_than=timedelta(0))
    else:
        tasks.payment_operation_execute(operation_id)
    print("done", flush=True)


if __name__ == "__main__":
    main()
