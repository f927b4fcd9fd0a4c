"""Absolute, percentile and memory criteria decided for real: a job posted through the API with such a
criterion and a real (tiny) benchmark package, calibrated, funded and verified by the verification host's
own code (`verification.host.execute_run`) against the live internal API, in real sandboxes, and paid per
tier, or failed naming the criterion it missed.

The implementations sleep rather than compute, so their latencies hold on a loaded machine."""

from __future__ import annotations

import json

import pytest

from jobs.models import Contract, Job, Submission
from jobs.services.bids import bid_accept, bid_place
from jobs.services.submissions import submission_create
from payments.models import Escrow
from tests.factories import CompanyAdminFactory, EngineerFactory, make_tar_gz
from tests.factories.archives import upload
from tests.factories.jobs import fund, job_request_body, onboard
from verification import host
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, private_key_pem, public_key_pem
from verification.services import signing_key_register

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = [pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

BUDGET_PAIRS = 8  # one PASS look (at the budget, below MIN_PASS_PAIRS): 7 of 8 pairs must clear the bar
CALIBRATION_PAIRS = 3
BID_AMOUNT = 100_000

MANIFEST = """format = 1
name = "sleepy-service"
mode = "stream"
command = ["python", "serve.py"]
implementation = "implementation"
public_inputs = "inputs/public"
hardware_class = "cpu"
warmup_runs = 0

[inputs]
format = "json"

[outputs]
format = "json"

[stream]
concurrency = 1
repeat_fraction = 0

[limits]
wall_seconds = 30
memory_mb = 512
max_processes = 8
"""

# Answers y = 2x after sleeping DELAY seconds (SLOW seconds for every SLOW_EVERY-th request it
# receives), holding HOLD bytes of memory it has written to.
SERVE = """import json, sys, time

DELAY, SLOW_EVERY, SLOW = {delay!r}, {slow_every!r}, {slow!r}
HOLD = b"\\x01" * {hold!r}
sys.stdout.write('{{"ready": true}}\\n')
sys.stdout.flush()
for count, line in enumerate(sys.stdin, start=1):
    request = json.loads(line)
    time.sleep(SLOW if SLOW_EVERY and count % SLOW_EVERY == 0 else DELAY)
    sys.stdout.write(json.dumps({{"id": request["id"], "data": {{"y": 2 * request["data"]["x"]}}}}) + "\\n")
    sys.stdout.flush()
"""


def serve_py(*, delay: float, slow_every: int = 0, slow: float = 0.0, hold: int = 0) -> bytes:
    return SERVE.format(delay=delay, slow_every=slow_every, slow=slow, hold=hold).encode()


def package_archive(*, delay: float) -> bytes:
    return make_tar_gz(
        {
            "speedproof.toml": MANIFEST.encode(),
            "implementation/serve.py": serve_py(delay=delay),
            "inputs/public/p0.json": b'{"x": -1}',
        }
    )


def hidden_inputs_archive(count: int) -> bytes:
    return make_tar_gz({f"h{index:02d}.json": json.dumps({"x": index}).encode() for index in range(count)})


def criteria_with(criterion: dict, tiers: list[dict]) -> dict:
    return {
        "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}, criterion],
        "correctness": {"mode": "exact"},
        "tiers": tiers,
    }


@pytest.fixture
def platform(live_server, settings, dispatched, tmp_path):
    """The live internal API, tasks run in-process as a worker would run them, and a verification host's
    configuration with a registered signing key."""
    from marketplace.celery import app

    settings.INTERNAL_API_BASE_URL = live_server.url
    settings.VERIFICATION_BUDGET_PAIRS = BUDGET_PAIRS
    settings.VERIFICATION_CALIBRATION_PAIRS = CALIBRATION_PAIRS
    key = generate_signing_key()
    key_path = tmp_path / "signing-key.pem"
    key_path.write_bytes(private_key_pem(key))
    signing_key_register(public_key_pem=public_key_pem(key).decode())
    (tmp_path / "host").mkdir()
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield Platform(live_server.url, dispatched, host.HostConfig(signing_key_path=key_path, work_dir=tmp_path / "host"))
    app.conf.task_always_eager = previous


class Platform:
    def __init__(self, base_url: str, dispatched: list, config: host.HostConfig):
        self.base_url, self.dispatched, self.config = base_url, dispatched, config

    def verify(self, subject: str) -> VerificationRun:
        """Carry out the subject's queued run the way a verification host's worker does."""
        run = VerificationRun.objects.get(subject=subject)
        dispatch = next(d for d in reversed(self.dispatched) if d.run_id == run.pk)
        host.execute_run(
            run_id=run.pk,
            token=dispatch.token,
            base_url=self.base_url,
            config=self.config,
            announced=dispatch.artifacts,
        )
        run.refresh_from_db()
        return run


def post_job(api_client_for, admin, *, criteria: dict, baseline_delay: float, inputs: int) -> Job:
    """Post, upload and publish through the API, as a company does."""
    company = api_client_for(admin)
    body = job_request_body(criteria=criteria, review_window_hours=0, max_submissions=2, budget_max=BID_AMOUNT)
    created = company.post("/api/v1/jobs/", body, format="json")
    assert created.status_code == 201, created.json()
    job_id = created.json()["id"]
    for path, archive in (
        ("package", package_archive(delay=baseline_delay)),
        ("hidden-inputs", hidden_inputs_archive(inputs)),
    ):
        response = company.put(f"/api/v1/jobs/{job_id}/{path}/", {"file": upload(archive, name=f"{path}.tar.gz")})
        assert response.status_code == 200, response.json()
    published = company.post(f"/api/v1/jobs/{job_id}/publish/")
    assert published.status_code == 200, published.json()
    return Job.objects.get(pk=job_id)


def calibrate(platform: Platform, job: Job) -> dict:
    run = platform.verify(f"calibration:job:{job.pk}")
    assert run.status == VerificationRun.Status.PASSED, run.reason
    job.refresh_from_db()
    assert job.calibration["status"] == "done"
    return {(entry["metric"], entry["statistic"]): entry for entry in job.calibration["criteria"]}


def fund_contract(job: Job) -> Contract:
    engineer = EngineerFactory()
    onboard(engineer)
    bid = bid_place(actor=engineer, job=job, amount=BID_AMOUNT, estimated_days=3, proposal="Stop sleeping.")
    return fund(bid_accept(actor=job.created_by, bid=bid))


def submit_and_verify(platform: Platform, contract: Contract, candidate: bytes) -> tuple[Submission, VerificationRun]:
    archive = make_tar_gz({"serve.py": candidate})
    submission = submission_create(
        actor=contract.engineer, contract=contract, upload=upload(archive, name="candidate.tar.gz")
    )
    run = platform.verify(f"submission:{submission.pk}")
    submission.refresh_from_db()
    return submission, run


def criterion_line(run: VerificationRun, metric: str, statistic: str) -> dict:
    return next(
        c
        for c in run.report["criteria"]
        if (c["criterion"]["metric"], c["criterion"]["statistic"]) == (metric, statistic)
    )


def summary(run: VerificationRun) -> list:
    """What a failed assertion shows: the reason and each criterion's and tier's decision and estimate."""
    lines = [(c["label"], c["decision"], c["estimate"]) for c in run.report["criteria"]]
    return [run.reason, *lines, *[(t["speedup"], t["decision"]) for t in run.report["tiers"]]]


def assert_paid(contract: Contract, fraction_bps: int) -> None:
    contract.refresh_from_db()
    escrow = Escrow.objects.get(pk=contract.escrow_id)
    assert (contract.earned_bps, escrow.released_bps) == (fraction_bps, fraction_bps)
    transfer = escrow.operations.get(kind="transfer")
    assert (transfer.amount, transfer.status) == (BID_AMOUNT * fraction_bps // 10_000, "succeeded")


def assert_failed_on(submission: Submission, run: VerificationRun, contract: Contract, metric: str, statistic: str):
    assert (submission.status, run.status, run.decision) == (Submission.Status.FAILED, "failed", "FAIL"), summary(run)
    line = criterion_line(run, metric, statistic)
    assert line["decision"] == "FAIL", run.report["criteria"]
    assert run.reason == f"criterion failed after {run.report['runs']['pairs']} pairs: {line['label']}"
    assert [c["label"] for c in run.report["criteria"] if c["decision"] == "FAIL"] == [line["label"]]
    contract.refresh_from_db()
    assert contract.earned_bps == 0
    assert not Escrow.objects.get(pk=contract.escrow_id).operations.filter(kind="transfer").exists()


def test_absolute_median_latency_pays_the_candidate_below_the_bound_and_fails_the_one_above(platform, api_client_for):
    # Bound 10 ms: the fast candidate answers in well under 1 ms; the slow one in 20 ms, which is still
    # 3x faster than the baseline (60 ms), so only the absolute criterion can fail it.
    criteria = criteria_with(
        {"metric": "latency", "statistic": "median", "kind": "absolute", "threshold": 0.010},
        [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.5, "fraction": 1.0}],
    )
    job = post_job(api_client_for, CompanyAdminFactory(), criteria=criteria, baseline_delay=0.060, inputs=8)
    latency = calibrate(platform, job)[("latency", "median")]
    assert latency["kind"] == "absolute" and latency["smallest_verifiable_speedup"] > 1.0
    assert latency["margin_noise_sd"] > 0 and latency["pairs_beating_bar_share"] > 0.5

    contract = fund_contract(job)
    slow, run = submit_and_verify(platform, contract, serve_py(delay=0.020))
    assert_failed_on(slow, run, contract, "latency", "median")
    # The reason says which way the bound goes, in seconds ("latency median vs 0.01" before).
    assert run.reason.endswith(": latency median <= 0.01 s")
    assert criterion_line(run, "latency", "median")["estimate"] > 0.010

    fast, run = submit_and_verify(platform, contract, serve_py(delay=0.0))
    assert (fast.status, run.decision, run.payout_fraction_bps) == (Submission.Status.PASSED, "PASS", 10_000), summary(
        run
    )
    line = criterion_line(run, "latency", "median")
    assert line["decision"] == "PASS" and line["interval"][1] < 0.010
    assert_paid(contract, 10_000)


def test_p95_latency_speedup_fails_a_slow_tail_that_a_median_would_hide(platform, api_client_for):
    # 40 requests a run (a per-run p95 needs 40). The tail candidate answers 7 of every 8 requests at
    # once and the 8th in 80 ms: its wall time is 2x the baseline's (20 ms each), its p95 4x worse.
    criteria = criteria_with(
        {"metric": "latency", "statistic": "p95", "kind": "speedup", "threshold": 1.5},
        [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 4.0, "fraction": 1.0}],
    )
    job = post_job(api_client_for, CompanyAdminFactory(), criteria=criteria, baseline_delay=0.020, inputs=40)
    noise = calibrate(platform, job)
    assert noise[("latency", "p95")]["smallest_verifiable_speedup"] > 1.0

    contract = fund_contract(job)
    tail, run = submit_and_verify(platform, contract, serve_py(delay=0.0, slow_every=8, slow=0.080))
    assert_failed_on(tail, run, contract, "latency", "p95")
    assert criterion_line(run, "latency", "p95")["estimate"] < 1.0
    measured = [m for m in run.report["measurements"] if m["role"] == "candidate" and m["phase"] == "measure"]
    # Five of each run's 40 requests are slow, so its p95 (the second slowest) is one of them.
    assert all(len(m["latencies_seconds"]) == 40 and m["latencies_seconds"][-2] >= 0.080 for m in measured)

    # 6 ms each: about 3x on wall time (the first tier, half the amount); on p95 a little less, as the
    # machine's scheduling delays add the same milliseconds to both tails.
    even, run = submit_and_verify(platform, contract, serve_py(delay=0.006))
    assert (even.status, run.decision, run.payout_fraction_bps) == (Submission.Status.PASSED, "PASS", 5_000), summary(
        run
    )
    assert criterion_line(run, "latency", "p95")["decision"] == "PASS"
    assert run.report["tier"] == {"speedup": 1.5, "fraction": 0.5}
    assert_paid(contract, 5_000)


def test_peak_memory_no_worse_fails_a_faster_candidate_that_needs_far_more_memory(platform, api_client_for):
    criteria = criteria_with(
        {"metric": "peak_memory", "statistic": "median", "kind": "no_worse", "tolerance": 0.25},
        [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 4.0, "fraction": 1.0}],
    )
    job = post_job(api_client_for, CompanyAdminFactory(), criteria=criteria, baseline_delay=0.040, inputs=8)
    memory = calibrate(platform, job)[("peak_memory", "median")]
    assert memory["aa_ratio_estimate"] == pytest.approx(1.0, abs=0.25)
    assert memory["smallest_verifiable_speedup"] is None  # compared directly, not by a sign test

    contract = fund_contract(job)
    # 150 MB written and held, answering at once: far faster, far larger.
    hog, run = submit_and_verify(platform, contract, serve_py(delay=0.0, hold=150 * 2**20))
    assert_failed_on(hog, run, contract, "peak_memory", "median")
    detail = criterion_line(run, "peak_memory", "median")["detail"]
    assert detail["candidate_median_bytes"] > 10 * detail["baseline_median_bytes"]
    assert criterion_line(run, "wall_time", "median")["estimate"] > 10

    # 16 ms each: 2.5x faster (the first tier), in the baseline's memory.
    lean, run = submit_and_verify(platform, contract, serve_py(delay=0.016))
    assert (lean.status, run.decision, run.payout_fraction_bps) == (Submission.Status.PASSED, "PASS", 5_000), summary(
        run
    )
    assert criterion_line(run, "peak_memory", "median")["decision"] == "PASS"
    assert_paid(contract, 5_000)
