from django.db.models import QuerySet

from .models import SigningKey, VerificationRun


def signing_key_list() -> QuerySet[SigningKey]:
    return SigningKey.objects.order_by("id")


def verification_runs_for(*, subject: str) -> QuerySet[VerificationRun]:
    return VerificationRun.objects.filter(subject=subject).select_related("plot_png", "plot_svg").order_by("-id")


def verification_run_latest(*, subject: str) -> VerificationRun | None:
    return verification_runs_for(subject=subject).first()


def report_tier_index(report: dict | None) -> int | None:
    """The payout tier a signed report reached, as its position (from 0) in the job's tier list.

    The runner's report names the tier by its speedup and fraction (`{"speedup": 2.0, "fraction": 1.0}`); its
    position is found in the report's own per-tier results (`tiers`, in the job's order), else in the criteria
    it was run with. An explicit `index` in the report's tier is taken as it is. None when no tier was reached.
    """
    tier = (report or {}).get("tier")
    if not isinstance(tier, dict):
        return None
    if isinstance(tier.get("index"), int):
        return tier["index"]
    for tiers in (report.get("tiers"), (report.get("criteria_spec") or {}).get("tiers")):
        for position, candidate in enumerate(tiers or []):
            if not isinstance(candidate, dict):
                continue
            if candidate.get("speedup") == tier.get("speedup") and candidate.get("fraction") == tier.get("fraction"):
                return position
    return None
