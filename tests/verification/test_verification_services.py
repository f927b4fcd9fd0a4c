import socket

import pytest
import structlog
from celery import Celery
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from common.errors import ValidationFailed
from common.models import AuditEvent
from verification.dispatch import send_run as send_to_broker  # the real producer, before `dispatched` replaces it
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, sign_report
from verification.services import (
    TOKEN_PREFIX,
    RunTokenRejected,
    verification_record_result,
    verification_run_dispatch,
    verification_run_heartbeat,
    verification_run_report_failure,
    verification_run_start,
    verification_watchdog,
)
from verification.signals import verification_finished

from .conftest import fake_report, signed

pytestmark = pytest.mark.django_db
Status = VerificationRun.Status


class Broker:
    """Switches the platform's producer between the real one pointed at a port nothing listens on
    (the broker is down) and the `dispatched` recorder (it is back)."""

    def __init__(self, dispatched, monkeypatch):
        self.dispatched, self.monkeypatch = dispatched, monkeypatch
        self.apps: list[Celery] = []

    def down(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        # Celery reads these before the app's own broker setting: the test command exports one.
        for variable in ("CELERY_BROKER_URL", "CELERY_BROKER_WRITE_URL"):
            self.monkeypatch.delenv(variable, raising=False)
        app = Celery("broker-down", broker=f"redis://127.0.0.1:{closed_port}/0", set_as_current=False)
        self.apps.append(app)
        self.monkeypatch.setattr("verification.dispatch.current_app", app)
        self.monkeypatch.setattr("verification.dispatch.send_run", send_to_broker)

    def up(self) -> None:
        self.monkeypatch.setattr("verification.dispatch.send_run", self.dispatched.append)


@pytest.fixture
def broker(dispatched, monkeypatch):
    controlled = Broker(dispatched, monkeypatch)
    yield controlled
    for app in controlled.apps:
        app.close()


def _assert_requeued_once(run, capture_on_commit) -> None:
    """A watchdog pass requeues the run as one infrastructure failure; a second pass changes nothing."""
    with capture_on_commit(execute=True):
        assert verification_watchdog() == [run.pk]
    with capture_on_commit(execute=True):
        assert verification_watchdog() == []
    run.refresh_from_db()
    assert (run.status, run.infrastructure_failures, run.dispatch_count) == (Status.QUEUED, 1, 2)


def _minutes_ago(minutes: float):
    return timezone.now() - timezone.timedelta(minutes=minutes)


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
                    kind="submission",
                    subject="test:9",
                    hardware_class="cpu-x86",
                    package=_artifact({"a": b"1"}),
                    hidden_inputs=_artifact({"b": b"2"}),
                    criteria={},
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
    assert (
        verification_record_result(run_id=run.pk, token=token, report=report, certificate=certificate).status == status
    )


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
        verification_record_result(
            run_id=run.pk, token=token, report=report, certificate=sign_report(report, generate_signing_key())
        )
    assert error.value.code == "certificate_key_unknown"
    certificate = sign_report(report, signing_key)
    tampered = {**report, "payout_fraction": 1.0, "decision": "PASS", "reason": "edited"}
    with pytest.raises(ValidationFailed) as error:
        verification_record_result(run_id=run.pk, token=token, report=tampered, certificate=certificate)
    assert error.value.code == "certificate_invalid"
    foreign = {**report, "sha256": {**report["sha256"], "candidate": "0" * 64}}
    with pytest.raises(ValidationFailed) as error:
        verification_record_result(
            run_id=run.pk, token=token, report=foreign, certificate=sign_report(foreign, signing_key)
        )
    assert error.value.code == "certificate_mismatch"
    run.refresh_from_db()
    assert run.status == Status.RUNNING


def test_infrastructure_failures_requeue_then_error(
    make_run, dispatched, finished_events, django_capture_on_commit_callbacks
):
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


def test_watchdog_requeues_silent_runs_and_is_idempotent(
    make_run, dispatched, settings, django_capture_on_commit_callbacks
):
    settings.VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS = 60
    run, token = make_run()
    verification_run_start(run_id=run.pk, token=token)
    assert verification_watchdog() == []
    VerificationRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    _assert_requeued_once(run, django_capture_on_commit_callbacks)
    with pytest.raises(RunTokenRejected):
        verification_run_heartbeat(run_id=run.pk, token=token, progress={})


def test_dispatch_is_stamped_only_once_the_message_is_out(make_run, dispatched, broker):
    run, token = make_run()
    run.refresh_from_db()
    assert run.dispatched_at is not None and dispatched[-1].token == token
    # A resend that fails (broker down) leaves the run unstamped, so the watchdog tries again later
    # (the fresh token already made the earlier message worthless).
    broker.down()
    assert verification_run_dispatch(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.dispatched_at is None and run.status == Status.QUEUED
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=run.pk, token=token)
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=_minutes_ago(2))
    assert verification_watchdog() == []  # still down
    run.refresh_from_db()
    assert run.dispatched_at is None and run.infrastructure_failures == 0
    broker.up()
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=_minutes_ago(2))  # the next pass
    assert verification_watchdog() == [run.pk]
    run.refresh_from_db()
    assert run.dispatched_at is not None and run.infrastructure_failures == 0
    verification_run_start(run_id=run.pk, token=dispatched[-1].token)


def test_a_broker_outage_after_the_commit_leaves_the_run_to_the_watchdog(
    db, dispatched, broker, django_capture_on_commit_callbacks
):
    """The send runs after the commit: had it raised, the request would answer 500 for a saved
    submission, and the client's retry would submit (and spend an attempt) twice."""
    broker.down()
    with structlog.testing.capture_logs() as logged:
        run = _created_run(django_capture_on_commit_callbacks, send=True)
    run.refresh_from_db()
    assert (run.status, run.dispatched_at, run.dispatch_count) == (Status.QUEUED, None, 1)
    (warning,) = [entry for entry in logged if entry["event"] == "verification_send_failed"]
    assert (warning["log_level"], warning["run_id"], warning["error"]) == ("warning", run.pk, "OperationalError")
    assert TOKEN_PREFIX not in repr(logged)
    # Back a day later: the token ran out meanwhile, yet a run never sent only needs sending.
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=_minutes_ago(24 * 60), token_expires_at=_minutes_ago(1))
    broker.up()
    assert verification_watchdog() == [run.pk]
    run.refresh_from_db()
    assert (run.infrastructure_failures, run.dispatch_count, len(dispatched)) == (0, 2, 1)
    assert run.dispatched_at is not None
    assert verification_run_start(run_id=run.pk, token=dispatched[0].token).status == Status.RUNNING


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("phase", ["requeue", "send"])
def test_a_run_the_watchdog_fails_on_does_not_stop_it_for_the_others(make_run, dispatched, settings, phase):
    """Transactional, so each requeue's on-commit send runs inside the watchdog's pass, as in production."""
    settings.VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS = 60
    runs = [make_run(subject=f"test:{number}")[0] for number in (1, 2)]
    for run in runs:
        verification_run_start(run_id=run.pk, token=next(d.token for d in dispatched if d.run_id == run.pk))
    VerificationRun.objects.update(heartbeat_at=_minutes_ago(5))
    broken: list[int] = []

    def break_the_first_run(sender, instance, update_fields=None, **kwargs):
        # The requeue saves the run's status; the send after its commit, the fresh token.
        if ("status" if phase == "requeue" else "dispatch_count") in (update_fields or ()):
            broken[:] = broken or [instance.pk]
            if instance.pk == broken[0]:
                raise RuntimeError("a receiver broke")

    post_save.connect(break_the_first_run, sender=VerificationRun, weak=False, dispatch_uid="break-the-first-run")
    try:
        handled = verification_watchdog()
    finally:
        post_save.disconnect(sender=VerificationRun, dispatch_uid="break-the-first-run")
    (healthy,) = [run for run in runs if run.pk not in broken]
    assert handled == [healthy.pk]
    healthy.refresh_from_db()
    assert (healthy.status, healthy.infrastructure_failures) == (Status.QUEUED, 1) and healthy.dispatched_at is not None
    failed = VerificationRun.objects.get(pk=broken[0])
    if phase == "requeue":
        assert (failed.status, failed.infrastructure_failures) == (Status.RUNNING, 0)  # rolled back
    else:
        assert (failed.status, failed.dispatched_at) == (Status.QUEUED, None)  # requeued, its send to redo
    VerificationRun.objects.filter(pk=failed.pk).update(updated_at=_minutes_ago(2))
    assert verification_watchdog() == [failed.pk]
    failed.refresh_from_db()
    assert (failed.status, failed.infrastructure_failures) == (Status.QUEUED, 1) and failed.dispatched_at is not None


def _created_run(django_capture_on_commit_callbacks, *, send: bool) -> VerificationRun:
    from tests.verification.conftest import _artifact
    from verification.services import verification_run_create

    with django_capture_on_commit_callbacks(execute=send):
        return verification_run_create(
            kind="submission",
            subject="test:lost",
            hardware_class="cpu-x86",
            package=_artifact({"a": b"1"}),
            hidden_inputs=_artifact({"b": b"2"}),
            criteria={},
        )


def _unsent_run(db, django_capture_on_commit_callbacks):
    """A run committed by a process that died before its on-commit send."""
    return _created_run(django_capture_on_commit_callbacks, send=False)


def test_watchdog_sends_a_run_whose_process_died_before_sending(db, dispatched, django_capture_on_commit_callbacks):
    run = _unsent_run(db, django_capture_on_commit_callbacks)
    assert dispatched == [] and verification_watchdog() == []  # give the sender its minute
    VerificationRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timezone.timedelta(minutes=2))
    assert verification_watchdog() == [run.pk]
    assert verification_watchdog() == []  # sent and stamped: not again
    run.refresh_from_db()
    assert len(dispatched) == 1 and run.dispatch_count == 2 and run.dispatched_at is not None
    assert run.infrastructure_failures == 0  # sending is the platform's part: nothing to count
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


def test_a_sent_run_no_host_started_while_its_token_lived_is_requeued_as_a_failure(
    make_run, dispatched, django_capture_on_commit_callbacks
):
    run, old_token = make_run()
    VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=_minutes_ago(1))
    _assert_requeued_once(run, django_capture_on_commit_callbacks)
    assert run.dispatched_at is not None and run.token_expires_at > timezone.now()
    assert "no verification host started the run" in run.error_log[-1]["reason"]
    requeued = AuditEvent.objects.get(
        object_type="verification.verificationrun", object_id=str(run.pk), verb="verification_requeued"
    )
    assert (requeued.from_state, requeued.to_state, requeued.data["failures"]) == (Status.QUEUED, Status.QUEUED, 1)
    with pytest.raises(RunTokenRejected):
        verification_run_start(run_id=run.pk, token=old_token)
    assert verification_run_start(run_id=run.pk, token=dispatched[-1].token).status == Status.RUNNING


def test_a_run_no_host_ever_starts_ends_in_error_after_three_waits(
    make_run, dispatched, finished_events, django_capture_on_commit_callbacks
):
    """No host serves the class: the run must end (its attempt given back) rather than keep its
    submission 'verifying', and so its contract unsettled, for ever."""
    run, _ = make_run()
    for _wait in range(3):
        VerificationRun.objects.filter(pk=run.pk).update(token_expires_at=_minutes_ago(1))
        with django_capture_on_commit_callbacks(execute=True):
            assert verification_watchdog() == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.infrastructure_failures, len(dispatched)) == (Status.ERROR, 3, 3)
    assert (
        run.reason.startswith("Infrastructure failed 3 times") and "no verification host started the run" in run.reason
    )
    assert [event["status"] for event in finished_events] == [Status.ERROR]
    with django_capture_on_commit_callbacks(execute=True):
        assert verification_watchdog() == []


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
        verification_record_result(
            run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key)
        )
    assert rendered == [run.pk]
    first = services.verification_plot_render(run_id=run.pk)
    second = services.verification_plot_render(run_id=run.pk)
    assert first.plot_png.file.open("rb").read(4) == b"\x89PNG"
    assert (second.plot_png_id, second.plot_svg_id) == (first.plot_png_id, first.plot_svg_id)
