"""jobs reacts to payments' and verification's domain events (they never import jobs).

Each receiver runs inside the transaction that sent the event and only touches the database.
"""

from django.dispatch import receiver

from payments import signals as payment_signals
from verification.models import VerificationRun
from verification.signals import verification_finished, verification_progressed, verification_started

from .models import Contract, Submission
from .services import contracts, disputes, events, jobs, submissions


@receiver(payment_signals.escrow_funded)
def on_escrow_funded(sender, escrow_id: int, reference: str, **kwargs) -> None:
    contract_id = contracts.contract_id_from_reference(reference)
    if contract_id is not None:
        contracts.contract_activate(contract_id=contract_id, reason="escrow funded")


@receiver(payment_signals.escrow_funding_failed)
def on_escrow_funding_failed(sender, escrow_id: int, reference: str, reason: str = "", **kwargs) -> None:
    contract_id = contracts.contract_id_from_reference(reference)
    if contract_id is not None:
        contracts.contract_record_funding_failure(contract_id=contract_id, reason=reason)


@receiver(payment_signals.escrow_cancelled)
def on_escrow_cancelled(sender, escrow_id: int, reference: str, reason: str = "", **kwargs) -> None:
    contract_id = contracts.contract_id_from_reference(reference)
    if contract_id is not None:
        contracts.contract_cancel_unfunded(
            actor=None, contract=Contract.objects.get(pk=contract_id), reason=reason or "funding deadline passed"
        )


@receiver(verification_finished)
def on_verification_finished(sender, run_id: int, subject: str, status: str, **result) -> None:
    if subject.startswith(submissions.SUBJECT_PREFIX):
        submissions.submission_record_verification(
            submission_id=int(subject.removeprefix(submissions.SUBJECT_PREFIX)),
            run_id=run_id,
            run_status=status,
            payout_fraction_bps=result.get("payout_fraction_bps"),
            speedup_estimate=result.get("speedup_estimate"),
        )
        # A dispute's re-verification verifies the same submission (its result leaves the submission as it is).
        disputes.dispute_record_reverification(run_id=run_id)
    elif subject.startswith(jobs.CALIBRATION_PREFIX):
        run = VerificationRun.objects.get(pk=run_id)
        jobs.job_record_calibration(
            job_id=int(subject.removeprefix(jobs.CALIBRATION_PREFIX)),
            run_id=run_id,
            run_status=status,
            report=run.report,
        )


@receiver(verification_started)
def on_verification_started(sender, run_id: int, subject: str, **kwargs) -> None:
    if subject.startswith(submissions.SUBJECT_PREFIX):
        submissions.submission_verification_event_emit(
            submission_id=int(subject.removeprefix(submissions.SUBJECT_PREFIX)), run_id=run_id, progress=False
        )


@receiver(verification_progressed)
def on_verification_progressed(sender, run_id: int, subject: str, **kwargs) -> None:
    if subject.startswith(submissions.SUBJECT_PREFIX):
        submissions.submission_verification_event_emit(
            submission_id=int(subject.removeprefix(submissions.SUBJECT_PREFIX)), run_id=run_id, progress=True
        )


@receiver(payment_signals.payout_settled)
def on_payout_settled(sender, user_id: int, payout: dict, **kwargs) -> None:
    events.payout_event_emit(user_id=user_id, payout=payout)


@receiver(payment_signals.payout_account_updated)
def on_payout_account_updated(sender, user_id: int, **kwargs) -> None:
    events.payout_account_event_emit(user_id=user_id)


@receiver(payment_signals.dispute_evidence_requested)
def on_dispute_evidence_requested(sender, escrow_id: int, reference: str, **kwargs) -> dict | None:
    """The evidence of delivered work for a chargeback: the latest passed submission's signed certificate and its
    report as the engineer may see it (nothing that reveals the hidden inputs), and a short summary."""
    from verification.serializers import report_for_engineer

    contract_id = contracts.contract_id_from_reference(reference)
    contract = Contract.objects.select_related("job").filter(pk=contract_id).first() if contract_id else None
    if contract is None:
        return None
    for submission in contract.submissions.filter(status=Submission.Status.PASSED).order_by("-number"):
        run = (
            VerificationRun.objects.filter(
                subject=f"{submissions.SUBJECT_PREFIX}{submission.pk}", certificate__isnull=False
            )
            .order_by("-id")
            .first()
        )
        if run is None:
            continue
        certificate = run.certificate or {}
        summary = (
            f'Speedproof contract {contract.pk} for the job "{contract.job.title}". The engineer delivered an '
            f"optimized candidate (submission {submission.number}); the platform's verification ran the company's "
            f"own benchmark on it and decided {run.decision or submission.status} on "
            f"{(run.finished_at.date().isoformat() if run.finished_at else 'record')}"
            f" (payout fraction {(run.payout_fraction_bps or 0) / 100:.2f}%). The attached certificate is signed by "
            f"verification key {certificate.get('key_id', '')}; the attached report is what it certifies."
        )
        return {"summary": summary, "certificate": certificate, "report": report_for_engineer(run.report or {})}
    return None
