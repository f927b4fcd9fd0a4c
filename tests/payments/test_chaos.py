"""Chaos on PostgreSQL, for real: threads, a SIGKILLed worker process, failing providers, webhook storms.

The ledger invariant is checked after each test by the autouse fixture in conftest.py.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from marketplace.celery import app as celery_app
from payments import selectors, services
from payments.models import Escrow, OfflineObject, ProviderOperation, WebhookEvent
from payments.providers.factory import provider_override
from tests.factories import CompanyAdminFactory, EngineerFactory

from .conftest import funded_escrow, open_escrow, stripe_provider

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]
ROOT = Path(__file__).resolve().parents[2]


def _in_threads(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def no_propagation():
    previous = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_eager_propagates = previous


def test_twenty_concurrent_releases_make_one_transfer(parties, settle, stripe_world):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    results = _in_threads(
        20,
        lambda i: services.escrow_release(
            escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id=f"run-{i}"
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.transfer_amount for r in results) == [0] * 19 + [200_000]
    assert stripe_world.fake.count("transfer") == 1
    assert ProviderOperation.objects.get().status == "succeeded"
    assert selectors.escrow_summary(escrow.pk).paid == 200_000


def test_concurrent_mixed_tiers_transfer_exactly_the_amount(parties, settle, stripe_world):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin, amount=200_003, fee=20_001)
    tiers = [2500, 5000, 7500, 10_000] * 5
    results = _in_threads(
        20,
        lambda i: services.escrow_release(
            escrow_id=escrow.pk, fraction_bps=tiers[i], reason="tier", verification_run_id="r"
        ),
    )
    for result in results:  # a lower tier arriving after a higher one is an idempotent no-op
        assert not isinstance(result, Exception), result
    transfers = stripe_world.fake.of_kind("transfer")
    assert sum(t["amount"] for t in transfers) == 200_003
    assert len({t["metadata"]["operation_key"] for t in transfers}) == len(transfers)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.fee_kept, summary.held) == (200_003, 20_001, 0)


def _worker(mode: str, op_id: int, marker: Path) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "marketplace.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "PAYMENT_PROVIDER": "offline",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.payments.chaos_worker", mode, str(op_id), str(marker)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("when", ["pause_before", "pause_after"])
def test_worker_killed_during_a_release_then_restarted_makes_exactly_one_transfer(
    when, parties, settle, offline_world, tmp_path, monkeypatch
):
    admin, org, engineer = parties
    settle(offline_world.onboard, engineer)
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    queued = []
    # the broker (patched where escrow_release looks it up: the services package only re-exports)
    monkeypatch.setattr("payments.services.escrows._enqueue", lambda name, *args: queued.append((name, args)))
    result = services.escrow_release(escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(idempotency_key=result.operation_key)
    assert queued == [("payment_operation_execute", (op.pk,))]

    marker = tmp_path / "marker"
    victim = _worker(when, op.pk, marker)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.monotonic() < deadline, "worker never reached the provider call"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    assert victim.returncode == -signal.SIGKILL
    assert ProviderOperation.objects.get(pk=op.pk).status == "pending"

    # Recovery: the restarted worker gets the message again (acks_late), or the beat sweep finds the pending
    # operation; then a duplicate delivery, which must be harmless.
    for mode in ["run", "run"] if when == "pause_before" else ["beat", "run"]:
        restarted = _worker(mode, op.pk, marker)
        output = restarted.communicate(timeout=60)[0].decode()
        assert restarted.returncode == 0, output
    op.refresh_from_db()
    assert op.status == "succeeded"
    assert OfflineObject.objects.filter(object_type="transfer").count() == 1
    assert selectors.escrow_summary(escrow.pk).paid == 200_000


def test_thirty_percent_provider_500s_every_release_and_refund_happens_exactly_once(
    settle, stripe_world, no_propagation
):
    world = stripe_world
    fake = world.fake
    # no SDK-level retries: every injected 500 reaches our own retry path
    world.provider = stripe_provider(fake, retries=0)
    with provider_override(world.provider):
        _releases_under_failures(world, settle)


def _releases_under_failures(world, settle):
    fake = world.fake
    engineers = [EngineerFactory() for _ in range(3)]
    for engineer in engineers:
        settle(world.onboard, engineer)
    admin = CompanyAdminFactory()
    org = admin.memberships.first().organization
    escrows = [open_escrow(org, engineers[i % 3], amount=100_000 + i * 7, fee=10_000 + i) for i in range(12)]
    fake.failure_rate = 0.3
    fake.inject("timeout_after", count=3, path="/v1/transfers")
    fake.inject("timeout_after", count=2, path="/v1/refunds")
    for escrow in escrows:  # the company's client retries until it gets an answer
        for _ in range(30):
            try:
                instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
                break
            except Exception:
                continue
        fake.failure_rate = 0.0
        settle(world.pay, instructions.payment_intent_id)
        fake.failure_rate = 0.3
    assert fake.count("payment_intent") == len(escrows)
    for i, escrow in enumerate(escrows):
        settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t1", verification_run_id="r")
        if i % 2:
            settle(
                services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="t2", verification_run_id="r"
            )
        else:
            settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="failed tier 2")
    for _ in range(60):  # the beat task, until everything is done
        if not ProviderOperation.objects.exclude(status="succeeded").exists():
            break
        services.payouts_retry_payable(older_than=timedelta(0))
    fake.failure_rate = 0.0
    assert fake.failures["500"] >= 8 and fake.failures["timeout_after"] == 5, fake.failures
    assert not ProviderOperation.objects.exclude(status="succeeded").exists()
    for i, escrow in enumerate(escrows):
        escrow.refresh_from_db()
        transfers = sorted(
            t["amount"] for t in fake.of_kind("transfer") if t["transfer_group"] == f"escrow_{escrow.pk}"
        )
        refunds = [r["amount"] for r in fake.of_kind("refund") if r["payment_intent"] == escrow.payment_intent_id]
        half = escrow.amount * 5000 // 10_000
        if i % 2:
            assert transfers == sorted([half, escrow.amount - half]) and refunds == []
        else:
            assert transfers == [half] and refunds == [escrow.total - half - escrow.fee * 5000 // 10_000]
        summary = selectors.escrow_summary(escrow.pk)
        assert summary.paid == sum(transfers) and summary.refunded == sum(refunds) and summary.held == 0
    keys = Counter(t["metadata"]["operation_key"] for t in fake.of_kind("transfer"))
    assert set(keys.values()) == {1}


def test_a_thousand_duplicated_and_shuffled_webhooks_have_no_double_effect(settle, stripe_world):
    world = stripe_world
    fake = world.fake
    rng = random.Random(1000)
    admin = CompanyAdminFactory()
    org = admin.memberships.first().organization
    engineers = [EngineerFactory() for _ in range(4)]
    for engineer in engineers:
        settle(services.engineer_onboarding_start, user=engineer, country="US")
        fake.account_activate(engineer.connected_account.provider_account_id)
    cards = ["pm_card_visa"] * 9 + ["pm_card_createDispute"] * 3
    escrows = [open_escrow(org, engineers[i % 4], amount=50_000 + i, fee=5_000) for i in range(len(cards))]
    for escrow, card in zip(escrows, cards, strict=True):
        pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
        world.fake_client.v1.payment_intents.confirm(pi, {"payment_method": card})
    disputes = fake.of_kind("dispute")
    fake.dispute_close(disputes[0]["id"], "won")
    fake.dispute_close(disputes[1]["id"], "lost")

    def storm(events, total, threads=4):
        deliveries = events + [rng.choice(events) for _ in range(total - len(events))]
        rng.shuffle(deliveries)
        chunks = [deliveries[i::threads] for i in range(threads)]

        def post_all(i):
            client = Client()
            from .conftest import World

            poster = World.__new__(World)
            poster.client = client
            return [poster.post_event(event).status_code for event in chunks[i]]

        results = _in_threads(threads, post_all)
        for result in results:
            assert not isinstance(result, Exception), result
        assert Counter(code for result in results for code in result) == Counter({200: total})

    first = list(fake.events)
    storm(first, 700)
    states = Counter(Escrow.objects.get(pk=e.pk).status for e in escrows)
    assert states == Counter({"funded": 11, "refunded": 1})
    frozen = Escrow.objects.filter(frozen=True)
    assert frozen.count() == 1 and frozen.get().payment_intent_id == disputes[2]["payment_intent"]
    for escrow in Escrow.objects.filter(status="funded", frozen=False):
        services.escrow_release(escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    second = list(fake.events[len(first) :])
    storm(second + first, 300)
    assert fake.count("transfer") == 10
    assert WebhookEvent.objects.count() == len({e["id"] for e in fake.events})
    assert set(WebhookEvent.objects.values_list("processed_count", flat=True)) == {1}
    assert not WebhookEvent.objects.exclude(status__in=["processed", "ignored"]).exists()
    for escrow in Escrow.objects.filter(status="released"):
        summary = selectors.escrow_summary(escrow.pk)
        assert (summary.paid, summary.fee_kept, summary.held) == (escrow.amount, escrow.fee, 0)
    lost = Escrow.objects.get(status="refunded")
    assert selectors.escrow_summary(lost.pk).refunded == lost.total
