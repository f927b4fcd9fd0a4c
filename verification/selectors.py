from django.db.models import QuerySet

from .models import SigningKey, VerificationRun


def signing_key_list() -> QuerySet[SigningKey]:
    return SigningKey.objects.order_by("id")


def verification_runs_for(*, subject: str) -> QuerySet[VerificationRun]:
    return VerificationRun.objects.filter(subject=subject).select_related("plot_png", "plot_svg").order_by("-id")


def verification_run_latest(*, subject: str) -> VerificationRun | None:
    return verification_runs_for(subject=subject).first()
