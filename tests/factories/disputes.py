"""Verification hosts for dispute tests: each one names itself and signs with its own registered key, and plays
its part through the same services the internal API calls (start, result)."""

from dataclasses import dataclass, field

from jobs.services.submissions import submission_create
from tests.factories.verification import fake_report
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, key_id, public_key_pem, sign_report
from verification.services import signing_key_register, verification_record_result, verification_run_start


@dataclass
class Host:
    host_id: str
    key: object = field(default_factory=generate_signing_key)

    def __post_init__(self):
        signing_key_register(public_key_pem=public_key_pem(self.key).decode())

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    def start(self, run: VerificationRun, token: str) -> VerificationRun:
        return verification_run_start(run_id=run.pk, token=token, host_id=self.host_id, key_id=self.key_id)

    def finish(
        self,
        run: VerificationRun,
        token: str,
        *,
        decision="PASS",
        fraction=1.0,
        estimate=2.2,
        measurements=None,
        report_extra: dict | None = None,
    ):
        """Start (if not yet started) and record a signed result; with `measurements`, a plot can be drawn;
        `report_extra` adds or replaces report fields (environment, blocked actions, logs)."""
        run.refresh_from_db()
        if run.status == VerificationRun.Status.QUEUED:
            self.start(run, token)
            run.refresh_from_db()
        report = fake_report(run, decision=decision, fraction=fraction, estimate=estimate)
        if measurements is not None:
            report["measurements"] = measurements
        report.update(report_extra or {})
        return verification_record_result(
            run_id=run.pk, token=token, report=report, certificate=sign_report(report, self.key)
        )


def token_of(dispatched, run: VerificationRun) -> str:
    return next(d.token for d in reversed(dispatched) if d.run_id == run.pk)


def submit_and_verify(
    contract, *, host: Host, dispatched, capture, decision="PASS", fraction=1.0, estimate=2.2, measurements=None
) -> VerificationRun:
    """The engineer submits a candidate and ``host`` verifies it; every on-commit effect runs."""
    with capture(execute=True):
        submission = submission_create(actor=contract.engineer, contract=contract, upload=_candidate_upload(), notes="")
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    with capture(execute=True):
        return host.finish(
            run,
            token_of(dispatched, run),
            decision=decision,
            fraction=fraction,
            estimate=estimate,
            measurements=measurements,
        )


def _candidate_upload():
    from tests.factories.archives import make_tar_gz, upload

    return upload(make_tar_gz({"impl/run.py": b"print('fast')\n"}), name="candidate.tar.gz")
