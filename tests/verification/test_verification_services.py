import pytest
from django.db import transaction
from django.utils import timezone

from common.errors import ValidationFailed
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, sign_report
from verification.services import (
    RunTokenRejected,
    verification_record_result,
    verification_run_heartbeat,
    verification_run_report_failure,
    verification_run_start,
    verification_watchdog,
)
from verification.signals import verification_finished

from .conftest import fake_report, signed

pytestmark = pytest.mark.django_db
Status = VerificationRun.Status


@pytest.fixture
def finished_events():
    events = []

    def receiver(sender, **kwargs):
        events.append(kwargs)

    verification_finished.connect(receiver)
    yield events
    verification_finished.disconnect(receiver)


def test_create_dispatches_on_commit_with_a_fresh_token(make_run, dispatched):
    run, token = make_run()
    run.refresh_from_db()
    assert len(dispatched) == 1 and dispatched[0].queue == "verify.cpu-x86"
    assert run.dispatch_count == 1 and run.token_hash and token not in run.token_hash


def test_no_dispatch_when_the_transaction_rolls_back(db, dispatched, django_capture_on_commit_callbacks):
    from tests.verification.conftest import _artifact
    from verification.services import verification_run_create

    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                verification_run_create(
                    kind="submission", subject="test:9", hardware_class="cpu-x86",
                    package=_artifact({"a": b"1"}), hidden_inputs=_artifact({"b": b"2"}), criteria={},
                )
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert dispatched == [] and not VerificationRun.objects.exists()


def test_happy_path_records_a_signed_result_once(make_run, signing_key, finished_events):
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    verification_run_heartbeat(run_id=run.pk, token=token, progress={"runs_done": 4, "runs_budget": 16, "secret": "x"})
    run.refresh_from_db()
    assert run.progress["runs_done"] == 4 and "secret" not in run.progress
    report, certificate = signed(run, signing_key)
    run = verification_record_result(run_id=run.pk, token=token, report=report, certificate=certificate)
    assert (run.status, run.decision, run.payout_fraction_bps, run.tier) == (Status.PASSED, "PASS", 10_000, 2)
    assert finished_events[0]["subject"] == "test:1" and finished_events[0]["status"] == Status.PASSED
    with pytest.raises(RunTokenRejected):
        verification_record_result(run_id=run.pk, token=token, report=report, certificate=certificate)
    assert len(finished_events) == 1


@pytest.mark.parametrize("decision,status", [("FAIL", Status.FAILED), ("INCONCLUSIVE", Status.INCONCLUSIVE)])
def test_decisions_map_to_statuses(make_run, signing_key, decision, status):
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    report, certificate = signed(run, signing_key, decision=decision, fraction=0.0)
    assert verification_record_result(run_id=run.pk, token=token, report=report, certificate=certificate).status == status


def test_tokens_are_scoped_to_one_run_and_expire(make_run):
    first, first_token = make_run(subject="test:1")
    second, second_token = make_run(subject="test:2")
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=second.pk, token=first_token)
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=first.pk, token="vrt_guessed")
    VerificationRun.objects.filter(pk=first.pk).update(token_expires_at=timezone.now())
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=first.pk, token=first_token)
    assert verification_run_start(run_id=second.pk, token=second_token).status == Status.RUNNING


def test_unregistered_key_tampered_report_and_foreign_files_are_refused(make_run, signing_key):
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run)
    with pytest.raises(ValidationFailed) as error:
        verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, generate_signing_key()))
    assert error.value.code == "certificate_key_unknown"
    certificate = sign_report(report, signing_key)
    tampered = {**report, "payout_fraction": 1.0, "decision": "PASS", "reason": "edited"}
    with pytest.raises(ValidationFailed) as error:
        verification_record_result(run_id=run.pk, token=token, report=tampered, certificate=certificate)
    assert error.value.code == "certificate_invalid"
    foreign = {**report, "sha256": {**report["sha256"], "candidate": "0" * 64}}
    with pytest.raises(ValidationFailed) as error:
        verification_record_result(run_id=run.pk, token=token, report=foreign, certificate=sign_report(foreign, signing_key))
    assert error.value.code == "certificate_mismatch"
    run.refresh_from_db()
    assert run.status == Status.RUNNING


def test_infrastructure_failures_requeue_then_error(make_run, dispatched, finished_events, django_capture_on_commit_callbacks):
    run, token = make_run()
    for attempt in range(3):
        verification_run_start(run_id=run.pk, token=token)
        with django_capture_on_commit_callbacks(execute=True):
            run = verification_run_report_failure(run_id=run.pk, token=token, reason=f"sandbox broke {attempt}")
        if attempt < 2:
            assert run.status == Status.QUEUED
            with pytest.raises(RunTokenRejected):
                verification_run_start(run_id=run.pk, token=token)
            token = dispatched[-1].token
    assert run.status == Status.ERROR and run.infrastructure_failures == 3
    assert finished_events[-1]["status"] == Status.ERROR
    assert len(dispatched) == 3


def test_runner_error_counts_as_infrastructure_failure(make_run, signing_key):
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    report, certificate = signed(run, signing_key, decision="ERROR", fraction=0.0)
    run = verification_record_result(run_id=run.pk, token=token, report=report, certificate=certificate)
    assert (run.status, run.infrastructure_failures) == (Status.QUEUED, 1)


def test_watchdog_requeues_silent_runs_and_is_idempotent(make_run, dispatched, settings, django_capture_on_commit_callbacks):
    settings.VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS = 60
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    assert verification_watchdog() == []
    VerificationRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert verification_watchdog() == [run.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert verification_watchdog() == []
    run.refresh_from_db()
    assert (run.status, run.infrastructure_failures, run.dispatch_count) == (Status.QUEUED, 1, 2)
    with pytest.raises(RunTokenRejected):
        verification_run_heartbeat(run_id=run.pk, token=token, progress={})


def test_dispatch_is_stamped_only_once_the_message_is_out(make_run, dispatched, monkeypatch):
    run, token = make_run()
    run.refresh_from_db()
    assert run.dispatched_at is not None and dispatched[-1].token == token

    def broker_down(dispatch):
        raise ConnectionError("broker unreachable")

    # A resend that fails (broker down) leaves the run unstamped, so the watchdog tries again later
    # (the fresh token already made the earlier message worthless).
    monkeypatch.setattr("verification.dispatch.send_run", broker_down)
    VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert verification_watchdog() == []
    run.refresh_from_db()
    assert run.dispatched_at is None and run.status == Status.QUEUED
    monkeypatch.setattr("verification.dispatch.send_run", dispatched.append)
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timezone.timedelta(minutes=2))
    assert verification_watchdog() == [run.pk]
    verification_run_start(run_id=run.pk, token=dispatched[-1].token)


def _unsent_run(db, django_capture_on_commit_callbacks):
    """A run committed by a process that died before its on-commit send."""
    from tests.verification.conftest import _artifact
    from verification.services import verification_run_create

    with django_capture_on_commit_callbacks(execute=False):
        run = verification_run_create(
            kind="submission", subject="test:lost", hardware_class="cpu-x86",
            package=_artifact({"a": b"1"}), hidden_inputs=_artifact({"b": b"2"}), criteria={},
        )
    return run


def test_watchdog_sends_a_run_whose_process_died_before_sending(db, dispatched, django_capture_on_commit_callbacks):
    run = _unsent_run(db, django_capture_on_commit_callbacks)
    assert dispatched == [] and verification_watchdog() == []  # give the sender its minute
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timezone.timedelta(minutes=2))
    assert verification_watchdog() == [run.pk]
    assert verification_watchdog() == []  # sent and stamped: not again
    run.refresh_from_db()
    assert len(dispatched) == 1 and run.dispatch_count == 2 and run.dispatched_at is not None
    verification_run_start(run_id=run.pk, token=dispatched[0].token)


def test_watchdog_sends_a_requeued_run_whose_resend_was_lost(make_run, dispatched, django_capture_on_commit_callbacks):
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    with django_capture_on_commit_callbacks(execute=False):  # the requeue's send never happens
        verification_run_report_failure(run_id=run.pk, token=token, reason="host lost")
    run.refresh_from_db()
    assert (run.status, run.dispatched_at, run.token_hash) == (Status.QUEUED, None, "")
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timezone.timedelta(minutes=2))
    assert verification_watchdog() == [run.pk]
    verification_run_start(run_id=run.pk, token=dispatched[-1].token)


def test_watchdog_refreshes_a_queued_run_whose_token_ran_out(make_run, dispatched):
    run, old_token = make_run()
    VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert verification_watchdog() == [run.pk]
    assert verification_watchdog() == []
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=run.pk, token=old_token)
    assert verification_run_start(run_id=run.pk, token=dispatched[-1].token).status == Status.RUNNING


def test_time_limits_derive_from_the_run_budget(make_run, settings):
    from verification.services import verification_time_limit

    settings.VERIFICATION_RUN_SECONDS_LIMIT = 10
    assert verification_time_limit(budget_pairs=8) == (2 * 8 + 4) * 10 + 120
    assert verification_time_limit(budget_pairs=40) > verification_time_limit(budget_pairs=8)
    settings.VERIFICATION_TIME_LIMIT_SECONDS = 300
    assert verification_time_limit(budget_pairs=40) == 300


def test_plot_is_drawn_on_the_platform_once(make_run, signing_key, django_capture_on_commit_callbacks, monkeypatch):
    from verification import services

    rendered = []
    monkeypatch.setattr(services, "_plot_render_later", rendered.append)
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    report, _ = signed(run, signing_key)
    report["measurements"] = [
        {"phase": "measure", "role": role, "pair": pair, "wall_seconds": seconds}
        for pair in range(3)
        for role, seconds in (("baseline", 0.2), ("candidate", 0.1))
    ]
    from verification.runner.certificate import sign_report

    with django_capture_on_commit_callbacks(execute=True):
        verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))
    assert rendered == [run.pk]
    first = services.verification_plot_render(run_id=run.pk)
    second = services.verification_plot_render(run_id=run.pk)
    assert first.plot_png.file.open("rb").read(4) == b"\x89PNG"
    assert (second.plot_png_id, second.plot_svg_id) == (first.plot_png_id, first.plot_svg_id)
