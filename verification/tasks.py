from celery import shared_task

from . import services


@shared_task(name="verification.tasks.verification_watchdog")
def verification_watchdog() -> list[int]:
    """Requeue silent or overrunning runs; a second run right after finds nothing to do."""
    return services.verification_watchdog()


@shared_task(name="verification.tasks.verification_plot_render")
def verification_plot_render(run_id: int) -> None:
    services.verification_plot_render(run_id=run_id)
