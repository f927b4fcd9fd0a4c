from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from .models import SigningKey, VerificationRun
from .runner import certificate as certificates


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


@dataclass(frozen=True)
class CertificateStatus:
    valid: bool
    detail: str
    key_id: str = ""


def verification_certificate_status(*, run: VerificationRun) -> CertificateStatus:
    """Whether the run's certificate verifies now against the key that signed it and matches its report and files,
    checked with the runner's own verification (as anyone holding the public key would)."""
    certificate = run.certificate
    if not certificate:
        return CertificateStatus(False, "no certificate (the run has no signed result)")
    key = run.signing_key or SigningKey.objects.filter(key_id=str(certificate.get("key_id", ""))).first()
    if key is None:
        return CertificateStatus(False, "signed by an unknown key")
    try:
        payload = certificates.verify_certificate(
            certificate, certificates.load_public_key(key.public_key_pem.encode()), report=run.report
        )
    except certificates.CertificateError as error:
        return CertificateStatus(False, f"does not verify: {error}", key.key_id)
    expected = {
        "package": run.package.sha256,
        "candidate": run.candidate.sha256 if run.candidate_id else None,
        "hidden_inputs": run.hidden_inputs.sha256,
    }
    if any((payload.get("sha256") or {}).get(name) != sha256 for name, sha256 in expected.items()):
        return CertificateStatus(False, "signed for other files than this run's", key.key_id)
    retired = "" if key.active else " (key since retired)"
    return CertificateStatus(True, f"signature valid, key {key.key_id}{retired}", key.key_id)


@dataclass(frozen=True)
class CriterionLine:
    label: str
    decision: str
    estimate: float | None
    interval: tuple[float, float] | None
    self_reported: bool


@dataclass(frozen=True)
class ReportSummary:
    """A run's report as an operator reads it. Logs are left out: a candidate's output could echo hidden inputs."""

    decision: str
    reason: str
    reason_code: str
    payout_fraction: float | None
    tier: int | None
    criteria: list[CriterionLine]
    pairs: int | None
    total_runs: int | None
    correctness: str
    blocked_actions: list[str]
    sandbox_violations: list[str]
    environment: list[tuple[str, str]]
    runner_version: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def verification_report_summary(*, run: VerificationRun) -> ReportSummary | None:
    report = run.report
    if not isinstance(report, dict):
        return None
    criteria = []
    for line in report.get("criteria") or []:
        if not isinstance(line, dict):
            continue
        interval = line.get("interval")
        bounds = (
            (float(interval[0]), float(interval[1]))
            if isinstance(interval, list | tuple)
            and len(interval) == 2
            and all(_number(v) is not None for v in interval)
            else None
        )
        criteria.append(
            CriterionLine(
                label=str(line.get("label", "")),
                decision=str(line.get("decision", "")),
                estimate=_number(line.get("estimate")),
                interval=bounds,
                self_reported=bool(line.get("self_reported")),
            )
        )
    runs = report.get("runs") if isinstance(report.get("runs"), dict) else {}
    correctness = report.get("correctness") if isinstance(report.get("correctness"), dict) else {}
    if correctness.get("passed") is None:
        correctness_text = "not checked"
    else:
        compared = correctness.get("outputs_compared")
        correctness_text = f"{'passed' if correctness['passed'] else 'FAILED'} ({compared} outputs compared)"
    blocked = [
        f"{item.get('role')}: {item.get('action')} ({item.get('runs')} runs)"
        for item in report.get("blocked_actions") or []
        if isinstance(item, dict) and item.get("role") != "policy"
    ]
    violations = (report.get("sandbox_violations") or {}).get("observed") or []
    violation_lines = [
        f"{item.get('role')}: {item.get('category')} on {item.get('inputs')} inputs, {item.get('events')} events "
        f"in {item.get('runs')} runs → {item.get('action')}"
        for item in violations
        if isinstance(item, dict)
    ]
    environment = report.get("environment") if isinstance(report.get("environment"), dict) else {}
    shown = ("host", "hostname", "cpu_model", "cpu_count", "gpu", "kernel", "machine", "python", "bubblewrap")
    return ReportSummary(
        decision=str(report.get("decision", "")),
        reason=str(report.get("reason", "")),
        reason_code=str(report.get("reason_code") or ""),
        payout_fraction=_number(report.get("payout_fraction")),
        tier=run.tier,
        criteria=criteria,
        pairs=runs.get("pairs") if isinstance(runs.get("pairs"), int) else None,
        total_runs=runs.get("total") if isinstance(runs.get("total"), int) else None,
        correctness=correctness_text,
        blocked_actions=blocked,
        sandbox_violations=violation_lines,
        environment=[(name, str(environment[name])) for name in shown if environment.get(name) not in (None, "")],
        runner_version=str(report.get("runner_version", "")),
    )


def verification_report_for_operators(*, run: VerificationRun) -> dict | None:
    """The raw report as operators see it: everything but the logs (a candidate's output could echo hidden inputs)."""
    if not isinstance(run.report, dict):
        return run.report
    return {key: value for key, value in run.report.items() if key != "logs"}


def verification_runs_filter(*, state: str) -> QuerySet[VerificationRun]:
    """Runs an operator watches: "active" (queued or running) or "errored" (error, or infrastructure failures)."""
    runs = VerificationRun.objects.all()
    if state == "active":
        return runs.filter(status__in=(VerificationRun.Status.QUEUED, VerificationRun.Status.RUNNING))
    if state == "errored":
        return runs.filter(Q(status=VerificationRun.Status.ERROR) | Q(infrastructure_failures__gt=0))
    return runs
