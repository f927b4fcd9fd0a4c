"""Every write to verification runs and signing keys. Runs move only through these functions."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_role_require
from common.errors import Conflict, NotPermitted, ValidationFailed
from common.models import Artifact
from common.services import artifact_store, audit_record
from common.transitions import transition_apply

from .models import SigningKey, VerificationRun
from .runner import certificate as certificates
from .selectors import report_tier_index
from .signals import verification_finished, verification_progressed, verification_started

log = structlog.get_logger(__name__)
Status = VerificationRun.Status

RUN_TRANSITIONS = {
    # queued -> queued: a run no host started while its token lived is requeued with a fresh one.
    Status.QUEUED: {Status.QUEUED, Status.RUNNING, Status.ERROR},
    Status.RUNNING: {Status.QUEUED, Status.PASSED, Status.FAILED, Status.INCONCLUSIVE, Status.ERROR},
}
DECISION_STATUS = {"PASS": Status.PASSED, "FAIL": Status.FAILED, "INCONCLUSIVE": Status.INCONCLUSIVE}
MAX_INFRASTRUCTURE_FAILURES = 3
TOKEN_PREFIX = "vrt_"


class RunTokenRejected(NotPermitted):
    """One answer for every bad token — unknown, expired, or another run's — so nothing leaks."""

    def __init__(self) -> None:
        super().__init__("This run token is not valid for this run.", code="run_token_invalid")


class HostExcluded(Conflict):
    """The run must be verified by another host than this one (a re-verification of this host's result)."""

    def __init__(self) -> None:
        super().__init__("This run must be verified by a different host.", code="host_excluded")


@dataclass(frozen=True)
class Dispatch:
    run_id: int
    token: str
    queue: str
    time_limit_seconds: int
    # name -> {sha256, size, archive_format}: lets the host fetch the files while start/ is answered
    artifacts: dict[str, dict[str, Any]] | None = None


ARTIFACT_FIELDS = ("package", "candidate", "hidden_inputs")


def _runs_with_files(*, lock: bool):
    """Runs with their three files in the same query; ``lock``: the run's own row only."""
    runs = VerificationRun.objects.select_related(*ARTIFACT_FIELDS)
    return runs.select_for_update(of=("self",)) if lock else runs


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def signing_key_register(*, public_key_pem: str) -> SigningKey:
    public_key = certificates.load_public_key(public_key_pem.encode())
    key_id = certificates.key_id(public_key)
    key, _ = SigningKey.objects.get_or_create(
        key_id=key_id, defaults={"public_key_pem": certificates.public_key_pem(public_key).decode()}
    )
    return key


def signing_key_retire(*, actor, key_id: str) -> None:
    """Stop accepting new results signed by this key (its old certificates stay verifiable). A payments
    operator's action: a retired key holds back every payout its host's results would release."""
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    SigningKey.objects.filter(key_id=key_id, active=True).update(active=False, retired_at=timezone.now())


def verification_time_limit(*, budget_pairs: int) -> int:
    """Every pair is two runs, plus warm-up; each run is bounded by the sandbox's own wall-clock limit."""
    runs = 2 * budget_pairs + 4
    return min(settings.VERIFICATION_TIME_LIMIT_SECONDS, runs * settings.VERIFICATION_RUN_SECONDS_LIMIT + 120)


@transaction.atomic
def verification_run_create(
    *,
    kind: str,
    subject: str,
    hardware_class: str,
    package: Artifact,
    hidden_inputs: Artifact,
    criteria: dict,
    candidate: Artifact | None = None,
    budget_pairs: int | None = None,
    exclude_host: str = "",
    exclude_key_id: str = "",
) -> VerificationRun:
    """Queue a run; it is sent to its hardware class's queue once the caller's transaction commits.
    ``exclude_host``/``exclude_key_id``: a host naming that id or signing key is refused the run."""
    budget = budget_pairs or settings.VERIFICATION_BUDGET_PAIRS
    run = VerificationRun(
        kind=kind,
        subject=subject,
        hardware_class=hardware_class,
        package=package,
        candidate=candidate,
        hidden_inputs=hidden_inputs,
        criteria=criteria,
        budget_pairs=budget,
        time_limit_seconds=verification_time_limit(budget_pairs=budget),
        exclude_host=exclude_host,
        exclude_key_id=exclude_key_id,
    )
    # The first token is issued with the row, so the commit is followed by nothing but the send.
    token = _run_token_issue(run)
    run.save()
    audit_record(
        actor=None,
        verb="verification_queued",
        obj=run,
        to_state=run.status,
        data={"subject": subject, "exclude_host": exclude_host, "exclude_key_id": exclude_key_id},
    )
    transaction.on_commit(lambda: _run_send(run, token))
    return run


def verification_run_repeat_elsewhere(*, run_id: int) -> VerificationRun:
    """Queue the same verification again (same subject, files, criteria and budget) for any host but the one
    that produced ``run_id``'s result: excluded by the host id it named and by the key that signed it."""
    original = VerificationRun.objects.select_related(*ARTIFACT_FIELDS, "signing_key").get(pk=run_id)
    if original.status not in VerificationRun.FINAL_STATUSES:
        raise ValidationFailed("Only a finished run can be verified again.", code="run_not_finished")
    return verification_run_create(
        kind=original.kind,
        subject=original.subject,
        hardware_class=original.hardware_class,
        package=original.package,
        candidate=original.candidate,
        hidden_inputs=original.hidden_inputs,
        criteria=original.criteria,
        budget_pairs=original.budget_pairs,
        exclude_host=original.host_id,
        exclude_key_id=original.signing_key.key_id if original.signing_key_id else original.host_key_id,
    )


def _run_token_issue(run: VerificationRun) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    run.token_hash = _token_hash(token)
    # Long enough to wait in the queue behind other runs; starting the run shortens it.
    run.token_expires_at = timezone.now() + timedelta(hours=settings.VERIFICATION_QUEUED_TOKEN_HOURS)
    run.dispatch_count += 1
    return token


def _run_send(run: VerificationRun, token: str) -> Dispatch | None:
    """The message sent, or None when the broker could not be reached."""
    sent_at = timezone.now()
    dispatch = Dispatch(run.pk, token, run.queue, run.time_limit_seconds, run_artifacts(run))
    from .dispatch import BROKER_ERRORS, send_run  # the Celery producer, kept out of the service's import graph

    try:
        send_run(dispatch)
    except BROKER_ERRORS as error:
        # Sends run after the commit: raising here would fail a request whose work is already saved
        # (a client retrying it would submit twice). The unstamped run is the watchdog's to send.
        log.warning("verification_send_failed", run_id=run.pk, queue=run.queue, error=type(error).__name__)
        return None
    # Stamped only once the message is out, and only while this message's token is the run's: a run
    # whose send never happened (the process died first, the broker was down) stays unstamped and the
    # watchdog sends it; a late stamp cannot mark a run requeued since.
    VerificationRun.objects.filter(pk=run.pk, status=Status.QUEUED, token_hash=_token_hash(token)).update(
        dispatched_at=sent_at
    )
    return dispatch


def run_artifacts(run: VerificationRun) -> dict[str, dict[str, Any]]:
    """The run's files as a host sees them (contents come only through the token-scoped channel)."""
    described = {}
    for name in ARTIFACT_FIELDS:
        artifact = getattr(run, name)
        if artifact is not None:
            described[name] = {
                "sha256": artifact.sha256,
                "size": artifact.size,
                "archive_format": artifact.archive_format or "tar.gz",
            }
    return described


def verification_run_dispatch(*, run_id: int) -> Dispatch | None:
    """Issue a fresh run token and send the run to its queue; None when the run is no longer queued
    (left alone) or the broker is unreachable (left unsent, for the watchdog).
    A fresh token makes any earlier message for the run worthless (its token no longer matches)."""
    with transaction.atomic():
        run = _runs_with_files(lock=True).get(pk=run_id)
        if run.status != Status.QUEUED:
            return None
        token = _run_token_issue(run)
        run.dispatched_at = None  # until this message is out
        run.save(update_fields=["token_hash", "token_expires_at", "dispatch_count", "dispatched_at", "updated_at"])
    return _run_send(run, token)


def _token_accepted(run: VerificationRun | None, token: str) -> bool:
    return bool(
        run is not None
        and run.token_hash
        and hmac.compare_digest(run.token_hash, _token_hash(token or ""))
        and run.token_expires_at is not None
        and run.token_expires_at > timezone.now()
    )


def _authenticated_run(run_id: int, token: str, *, lock: bool = True) -> VerificationRun:
    # The run's spec and its certificate check need all three files.
    run = _runs_with_files(lock=lock).filter(pk=run_id).first()
    if not _token_accepted(run, token):
        raise RunTokenRejected()
    return run


def verification_run_token_check(*, run_id: int, token: str) -> None:
    """Refuse a bad token before anything else about a request is looked at, its body included, so
    every caller without a valid token gets the same answer. Unlocked: the write that follows
    checks the token again under its row lock, and that check decides."""
    run = VerificationRun.objects.only("token_hash", "token_expires_at").filter(pk=run_id).first()
    if not _token_accepted(run, token):
        raise RunTokenRejected()


def verification_run_authenticate(*, run_id: int, token: str) -> VerificationRun:
    """Read-only access (downloads): no row lock, so a host's parallel downloads do not queue."""
    return _authenticated_run(run_id, token, lock=False)


def _host_excluded(run: VerificationRun, host_id: str, key_id: str) -> bool:
    if not run.excludes_a_host:
        return False
    if not host_id or not key_id:
        return True  # a host that does not say who it is cannot show it is another one
    return host_id == run.exclude_host or key_id == run.exclude_key_id


def verification_run_start(*, run_id: int, token: str, host_id: str = "", key_id: str = "") -> VerificationRun:
    """A host claims the run, naming itself (``host_id``) and the key it will sign with (``key_id``).

    A host the run excludes is refused (``HostExcluded``); the refusal is recorded (committed) so that the
    run reads as waiting for another host, and the host puts the run back on its queue for another one."""
    with transaction.atomic():
        run = _authenticated_run(run_id, token)
        if run.status == Status.RUNNING:
            return run
        if _host_excluded(run, host_id, key_id):
            run.declined_count += 1
            run.declined_at = timezone.now()
            run.save(update_fields=["declined_count", "declined_at", "updated_at"])
            audit_record(
                actor=None,
                verb="verification_declined_excluded_host",
                obj=run,
                from_state=run.status,
                to_state=run.status,
                data={"host_id": host_id, "key_id": key_id},
            )
            excluded = True
        else:
            excluded = False
            now = timezone.now()
            run.started_at = run.heartbeat_at = now
            run.token_expires_at = now + timedelta(
                seconds=run.time_limit_seconds + settings.VERIFICATION_TOKEN_GRACE_SECONDS
            )
            run.host_id, run.host_key_id = host_id, key_id
            transition_apply(
                run,
                to=Status.RUNNING,
                allowed=RUN_TRANSITIONS,
                actor=None,
                verb="verification_started",
                data={"dispatch": run.dispatch_count, "host_id": host_id, "key_id": key_id},
                update_fields=["started_at", "heartbeat_at", "token_expires_at", "host_id", "host_key_id"],
            )
            verification_started.send(sender=VerificationRun, run_id=run.pk, subject=run.subject, kind=run.kind)
    if excluded:
        log.info("verification_declined_excluded_host", run_id=run.pk, host_id=host_id)
        raise HostExcluded()
    return run


@transaction.atomic
def verification_run_heartbeat(*, run_id: int, token: str, progress: dict[str, Any]) -> VerificationRun:
    run = _authenticated_run(run_id, token)
    if run.status != Status.RUNNING:
        raise RunTokenRejected()
    run.heartbeat_at = timezone.now()
    run.progress = {
        key: progress.get(key)
        for key in ("phase", "runs_done", "runs_budget", "pairs_done", "pairs_budget", "estimate", "interval")
    }
    run.save(update_fields=["heartbeat_at", "progress", "updated_at"])
    # At most one progress event per run and period: hosts beat every few seconds. The slot is taken before
    # the event commits, so a rolled-back heartbeat can cost one event of a stream that is throttled anyway.
    if cache.add(f"verification:progress-event:{run.pk}", 1, timeout=settings.VERIFICATION_PROGRESS_EVENT_SECONDS):
        verification_progressed.send(
            sender=VerificationRun, run_id=run.pk, subject=run.subject, kind=run.kind, progress=dict(run.progress)
        )
    return run


def _verified_certificate(run: VerificationRun, report: dict, certificate: dict) -> SigningKey:
    key = SigningKey.objects.filter(key_id=str(certificate.get("key_id", "")), active=True).first()
    if key is None:
        raise ValidationFailed("The certificate's key is not an active signing key.", code="certificate_key_unknown")
    try:
        payload = certificates.verify_certificate(
            certificate, certificates.load_public_key(key.public_key_pem.encode()), report=report
        )
    except certificates.CertificateError as error:
        raise ValidationFailed(f"The certificate does not verify: {error}", code="certificate_invalid") from error
    if run.exclude_key_id and key.key_id == run.exclude_key_id:
        raise ValidationFailed(
            "The certificate is signed by the host this run had to be verified away from.",
            code="certificate_key_excluded",
        )
    if run.host_key_id and key.key_id != run.host_key_id:
        raise ValidationFailed(
            "The certificate is signed by another key than the one the host started the run with.",
            code="certificate_key_mismatch",
        )
    expected = {
        "package": run.package.sha256,
        "candidate": run.candidate.sha256 if run.candidate_id else None,
        "hidden_inputs": run.hidden_inputs.sha256,
    }
    signed = payload.get("sha256", {})
    for name, sha256 in expected.items():
        if signed.get(name) != sha256:
            raise ValidationFailed("The certificate is for other files than this run's.", code="certificate_mismatch")
    return key


def verification_record_result(
    *,
    run_id: int,
    token: str,
    report: dict,
    certificate: dict,
) -> VerificationRun:
    """Record a signed result once; the token dies with it, so a replay is refused."""
    with transaction.atomic():
        run = _authenticated_run(run_id, token)
        if run.status != Status.RUNNING:
            raise RunTokenRejected()
        key = _verified_certificate(run, report, certificate)
        decision = report.get("decision")
        if decision == "ERROR":
            return _infrastructure_failure_locked(run, reason=str(report.get("reason", "runner error"))[:500])
        status = Status.PASSED if run.kind == VerificationRun.Kind.CALIBRATION else DECISION_STATUS.get(decision)
        if status is None:
            raise ValidationFailed("Unknown decision.", code="invalid_decision")
        run.report = report
        run.certificate = certificate
        run.signing_key = key
        run.decision = decision
        run.reason = str(report.get("reason", ""))[:2000]
        run.payout_fraction_bps = round(float(report.get("payout_fraction") or 0) * 10_000)
        run.tier = report_tier_index(report)
        run.speedup_estimate = _speedup_estimate(report)
        run.finished_at = timezone.now()
        run.token_hash = ""
        transition_apply(
            run,
            to=status,
            allowed=RUN_TRANSITIONS,
            actor=None,
            verb="verification_finished",
            data={"decision": decision, "payout_fraction_bps": run.payout_fraction_bps, "key_id": key.key_id},
            update_fields=[
                "report",
                "certificate",
                "signing_key",
                "decision",
                "reason",
                "payout_fraction_bps",
                "tier",
                "speedup_estimate",
                "finished_at",
                "token_hash",
            ],
        )
        _announce(run)
        if report.get("measurements"):
            transaction.on_commit(lambda: _plot_render_later(run.pk))
    log.info("verification_recorded", run_id=run.pk, decision=decision, subject=run.subject)
    return run


def _plot_render_later(run_id: int) -> None:
    from .tasks import verification_plot_render

    verification_plot_render.delay(run_id)


def verification_plot_render(*, run_id: int) -> VerificationRun:
    """Draw the report's plot on the platform, off the verification's critical path. Idempotent."""
    import tempfile
    from pathlib import Path

    from .runner.plot import write_plot

    run = VerificationRun.objects.get(pk=run_id)
    if run.plot_png_id or not run.report or not run.report.get("measurements"):
        return run
    with tempfile.TemporaryDirectory() as scratch:
        png, svg = write_plot(run.report, Path(scratch) / "plot.png")
        with png.open("rb") as png_file, svg.open("rb") as svg_file:
            png_artifact = artifact_store(fileobj=png_file)
            svg_artifact = artifact_store(fileobj=svg_file)
    VerificationRun.objects.filter(pk=run_id, plot_png__isnull=True).update(
        plot_png=png_artifact, plot_svg=svg_artifact
    )
    run.refresh_from_db()
    return run


def _speedup_estimate(report: dict) -> float | None:
    for criterion in report.get("criteria") or []:
        if (criterion.get("criterion") or {}).get("kind") == "speedup":
            return criterion.get("estimate")
    return None


def _announce(run: VerificationRun) -> None:
    verification_finished.send(
        sender=VerificationRun,
        run_id=run.pk,
        subject=run.subject,
        kind=run.kind,
        status=run.status,
        decision=run.decision,
        payout_fraction_bps=run.payout_fraction_bps,
        tier=run.tier,
        speedup_estimate=run.speedup_estimate,
    )


def _infrastructure_failure_locked(run: VerificationRun, *, reason: str) -> VerificationRun:
    run.infrastructure_failures += 1
    run.token_hash = ""
    run.error_log = [*run.error_log, {"at": timezone.now().isoformat(), "reason": reason}][-10:]
    if run.infrastructure_failures >= MAX_INFRASTRUCTURE_FAILURES:
        run.finished_at = timezone.now()
        run.reason = f"Infrastructure failed {run.infrastructure_failures} times; last: {reason}"
        transition_apply(
            run,
            to=Status.ERROR,
            allowed=RUN_TRANSITIONS,
            actor=None,
            verb="verification_errored",
            data={"reason": reason},
            update_fields=["infrastructure_failures", "token_hash", "error_log", "finished_at", "reason"],
        )
        _announce(run)
        return run
    run.started_at = run.heartbeat_at = run.dispatched_at = None
    run.progress = {}
    transition_apply(
        run,
        to=Status.QUEUED,
        allowed=RUN_TRANSITIONS,
        actor=None,
        verb="verification_requeued",
        data={"reason": reason, "failures": run.infrastructure_failures},
        update_fields=[
            "infrastructure_failures",
            "token_hash",
            "error_log",
            "started_at",
            "heartbeat_at",
            "progress",
            "dispatched_at",
        ],
    )
    transaction.on_commit(lambda: verification_run_dispatch(run_id=run.pk))
    return run


def verification_run_report_failure(*, run_id: int, token: str, reason: str) -> VerificationRun:
    """The verification host could not carry out the run (download, sandbox, crash)."""
    with transaction.atomic():
        run = _authenticated_run(run_id, token)
        if run.status != Status.RUNNING:
            raise RunTokenRejected()
        return _infrastructure_failure_locked(run, reason=reason[:500])


def verification_watchdog_by_operator(*, actor) -> list[int]:
    """An operator running the watchdog now (requeue silent or overrunning runs, resend unsent ones): a re-run
    of verifications, which support may do; no money moves."""
    operator_role_require(user=actor, role=SUPPORT)
    return verification_watchdog()


def verification_watchdog() -> list[int]:
    """Requeue runs whose host went silent or overran, and runs no host started while their token
    lived, as infrastructure failures (the third ends the run): a run never stays 'running' or
    'queued' forever. Then send the queued runs whose message never went out."""
    now = timezone.now()
    silent_since = now - timedelta(seconds=settings.VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS)
    grace = timedelta(seconds=settings.VERIFICATION_TOKEN_GRACE_SECONDS)
    handled = []

    def problem(run: VerificationRun) -> str | None:
        if run.status == Status.RUNNING:
            if run.heartbeat_at is None or run.heartbeat_at < silent_since:
                return "no heartbeat from the verification host"
            if run.started_at + timedelta(seconds=run.time_limit_seconds) + grace < now:
                return "the run overran its time limit"
        elif (
            run.status == Status.QUEUED
            and run.dispatched_at is not None
            and run.token_expires_at is not None
            and run.token_expires_at < now
        ):
            # Sent, yet no host started it in all that time: none serves its queue, or the message was
            # lost. Counted, so that a submission cannot stay 'verifying' (blocking its contract) forever.
            return (
                f"no verification host started the run within {settings.VERIFICATION_QUEUED_TOKEN_HOURS} hours"
                f" on queue {run.queue}"
            )
        return None

    # A re-verification that only excluded hosts have tried waits for another host: its message is renewed
    # with a fresh token, and no failure is counted (the dispute it serves is escalated by its own clock).
    waiting = VerificationRun.objects.filter(
        status=Status.QUEUED, dispatched_at__isnull=False, token_expires_at__lt=now, declined_count__gt=0
    ).exclude(exclude_host="", exclude_key_id="")
    waiting_ids = list(waiting.values_list("pk", flat=True))
    for run_id in waiting_ids:
        try:
            if verification_run_dispatch(run_id=run_id) is not None:
                handled.append(run_id)
        except Exception as error:
            log.warning("verification_resend_failed", run_id=run_id, error=type(error).__name__)
    failing = Q(status=Status.RUNNING) | Q(status=Status.QUEUED, dispatched_at__isnull=False, token_expires_at__lt=now)
    for run_id in list(
        VerificationRun.objects.filter(failing).exclude(pk__in=waiting_ids).values_list("pk", flat=True)
    ):
        try:
            with transaction.atomic():
                run = VerificationRun.objects.select_for_update().get(pk=run_id)
                reason = problem(run)
                if reason is None:
                    continue
                _infrastructure_failure_locked(run, reason=reason)
        except Exception as error:
            log.warning("verification_watchdog_run_failed", run_id=run_id, error=type(error).__name__)
            continue
        handled.append(run_id)
    # Queued runs whose message never went out (the sending process died after the commit, or the
    # broker was down): sent without counting a failure, the host class is not at fault.
    unsent = VerificationRun.objects.filter(
        status=Status.QUEUED, dispatched_at__isnull=True, updated_at__lt=now - timedelta(minutes=1)
    ).values_list("pk", flat=True)
    for run_id in list(unsent):
        try:
            sent = verification_run_dispatch(run_id=run_id)
        except Exception as error:
            log.warning("verification_resend_failed", run_id=run_id, error=type(error).__name__)
            continue
        if sent is not None:
            handled.append(run_id)
    return handled
