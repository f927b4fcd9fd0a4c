#!/usr/bin/env python3
"""`make demo`: the example job's whole story against the service `make run` started, through the public REST API.

A company and two engineers sign up, webhook endpoints are registered for the company's organization and for
each engineer (a receiver started here verifies every signature and prints each event), the example MLP job is
posted with its package and hidden inputs, calibration reports the noise floor, both engineers bid, the company
accepts one bid and funds it (offline provider), the engineer submits the fast candidate (PASS: the first
tier's share is released) and then the wrong one (FAIL: no attempts left, the rest goes back to the company),
and the report plot, the signed certificate and a summary are written to a folder that is printed last.

    .venv/bin/python scripts/demo.py [--url http://127.0.0.1:8000] [--out var/demo/<timestamp>]

An API client, not part of the service: the standard library and `requests` only. Every run signs up new
accounts, so it can run again against the same service. Exits 0 when the story went as told, 1 (with the
reason) on any unexpected answer, 2 when the service is not running.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import hmac
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mlp"
PASSWORD = "speedproof-demo-run-1"
BID_AMOUNT, OTHER_BID_AMOUNT = 100_000, 120_000  # minor units (cents)
# The first tier pays 60 % at 1.5x; the stretch tier (100x, out of the fast candidate's reach) pays the rest.
# So the fast candidate earns a release and leaves a remainder, which the wrong one cannot earn: refunded.
DEMO_TIERS = [{"speedup": 1.5, "fraction": 0.6}, {"speedup": 100.0, "fraction": 1.0}]
KEY_EVENTS = (
    "job.published",
    "job.calibrated",
    "bid.placed",
    "bid.accepted",
    "contract.funded",
    "submission.received",
    "verification.completed",
    "escrow.released",
    "escrow.refunded",
)
SIGNATURE_TOLERANCE_SECONDS = 300


class DemoError(Exception):
    """An answer the story did not expect: the demo stops and says which."""


def say(message: str) -> None:
    print(message, flush=True)


def money(amount: int, currency: str = "USD") -> str:
    """Integer minor units as a person reads them (the example job is in USD: two decimals)."""
    return f"{currency} {amount / 100:,.2f}"


# --- the webhook receiver --------------------------------------------------------------------------------------


def signature_valid(header: str, body: bytes, secret: str, tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """The check docs/webhooks.md gives every receiver: one `t`, fresh, and any `v1` matching, in constant time."""
    parts = [item.split("=", 1) for item in header.split(",") if "=" in item]
    stamps = [v for k, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(time.time() - int(stamps[0])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")


class WebhookReceiver:
    """A loopback HTTP server with one path per registered endpoint; it verifies each request against that
    endpoint's secret and keeps every verified event once (deliveries may repeat)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.events: list[dict] = []
        self.seen: set[tuple[str, str]] = set()
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.receive(self.path, self.headers.get("Speedproof-Signature", ""), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:
                pass  # the receiver prints what it verified, not the access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def receive(self, path: str, header: str, body: bytes) -> int:
        recipient = path.strip("/")
        secret = self.secrets.get(recipient)
        if secret is None or not signature_valid(header, body, secret):
            with self.lock:
                self.rejected.append(recipient)
            say(f"  [webhook] REJECTED a request to /{recipient}: signature did not verify")
            return 400
        event = json.loads(body)
        with self.lock:
            if (recipient, event["id"]) in self.seen:
                return 200  # a repeated delivery: processed once
            self.seen.add((recipient, event["id"]))
            self.events.append({"recipient": recipient, "type": event["type"], "id": event["id"], "verified": True})
        say(f"  [webhook -> {recipient}] {event['type']} {event['id']} (signature verified)")
        return 200

    def types_for(self, recipient: str) -> set[str]:
        with self.lock:
            return {event["type"] for event in self.events if event["recipient"] == recipient}


# --- the API client ----------------------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str, token: str | None = None):
        self.base = base.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        url = path if path.startswith("http") else f"{self.base}/api/v1/{path}"
        try:
            response = self.session.request(method, url, timeout=60, **kwargs)
        except requests.RequestException as error:
            raise DemoError(f"{method.upper()} {url} failed: {error}") from error
        if response.status_code != expect:
            raise DemoError(
                f"{method.upper()} {url} answered {response.status_code}, expected {expect}: {response.text[:800]}"
            )
        return response.json() if response.content else {}

    def raw(self, path: str) -> bytes:
        response = self.session.get(f"{self.base}/api/v1/{path}", timeout=60)
        if response.status_code != 200:
            raise DemoError(f"GET {path} answered {response.status_code}: {response.text[:500]}")
        return response.content

    def login(self, email: str, password: str) -> None:
        """A browser's session, for the offline provider's payout onboarding page."""
        login_url = f"{self.base}/api-auth/login/"
        self.session.get(login_url, timeout=60)
        response = self.session.post(
            login_url,
            data={
                "username": email,
                "password": password,
                "csrfmiddlewaretoken": self.session.cookies.get("csrftoken"),
            },
            headers={"Referer": login_url},
            allow_redirects=False,
            timeout=60,
        )
        if response.status_code != 302 or "sessionid" not in self.session.cookies:
            raise DemoError(f"signing in as {email} for the onboarding page failed ({response.status_code})")

    def post_page(self, url: str) -> None:
        self.session.get(url, timeout=60)
        response = self.session.post(
            url,
            data={"csrfmiddlewaretoken": self.session.cookies.get("csrftoken")},
            headers={"Referer": url},
            timeout=60,
        )
        if response.status_code != 200:
            raise DemoError(f"POST {url} answered {response.status_code}: {response.text[:500]}")


def wait_for(predicate, *, what: str, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def directory_tar_gz(directory: Path) -> bytes:
    """The same bytes for the same files (no clock, no file times): the service stores artifacts by sha256."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = tarfile.TarInfo(str(path.relative_to(directory)))
                info.size = path.stat().st_size
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                with path.open("rb") as content:
                    archive.addfile(info, content)
    return buffer.getvalue()


def hidden_inputs_archive(seed: int) -> bytes:
    """What a company does: generate hidden inputs with a seed it keeps to itself (the example's generator)."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                str(EXAMPLE / "generate_inputs.py"),
                scratch,
                "--count",
                "8",
                "--rows",
                "8",
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return directory_tar_gz(Path(scratch))


# --- the story -------------------------------------------------------------------------------------------------


class Demo:
    def __init__(self, base: str, out: Path, timeout: float, hardware_class: str):
        self.base, self.out, self.timeout, self.hardware_class = base.rstrip("/"), out, timeout, hardware_class
        self.run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)
        self.receiver = WebhookReceiver()
        self.summary: dict = {"service": self.base, "run": self.run_id, "steps": []}
        self.step_number = 0
        self.endpoints: list[tuple[Api, int]] = []

    def step(self, line: str, **recorded) -> None:
        self.step_number += 1
        say(f"[{self.step_number:2d}] {line}")
        self.summary["steps"].append({"step": self.step_number, "line": line, **recorded})

    def check_service(self) -> None:
        try:
            response = requests.get(f"{self.base}/health/live/", timeout=5)
        except requests.RequestException:
            response = None
        if response is None or response.status_code != 200:
            raise ServiceDown(
                f"Speedproof is not answering at {self.base}. Start it with `make run` in another terminal "
                "(wait for the box with the demo accounts), then run `make demo` again."
            )

    def email(self, who: str) -> str:
        return f"demo-{self.run_id}-{who}@example.com"

    def run(self) -> None:
        self.check_service()
        self.out.mkdir(parents=True, exist_ok=True)
        self.receiver.start()
        say(f"Speedproof demo against {self.base}; webhook receiver on {self.receiver.base_url}")
        say(
            "The story: the job's tiers pay 60 % of the bid at 1.5x and the rest only at 100x. The fast candidate "
            "earns the first tier (released to the engineer); the wrong one spends the last attempt and fails, so "
            "the rest is refunded to the company."
        )
        try:
            self.story()
        finally:
            self.unregister_webhooks()
            self.receiver.stop()

    def signup(self) -> None:
        company = Api(self.base).call(
            "post",
            "auth/signup/company/",
            201,
            json={
                "email": self.email("company"),
                "password": PASSWORD,
                "name": "Demo Company Admin",
                "organization_name": f"Demo Inference Co {self.run_id}",
            },
        )
        self.company = Api(self.base, company["token"]["token"])
        self.organization = self.company.call("get", "organizations/")["results"][0]
        self.engineers: dict[str, Api] = {}
        for name in ("ada", "grace"):
            body = Api(self.base).call(
                "post",
                "auth/signup/engineer/",
                201,
                json={"email": self.email(name), "password": PASSWORD, "name": name.title(), "skills": ["numpy"]},
            )
            self.engineers[name] = Api(self.base, body["token"]["token"])
        self.step(
            f"Signed up company {self.email('company')} (organization {self.organization['name']!r}) "
            f"and engineers {self.email('ada')}, {self.email('grace')}"
        )

    def register_webhooks(self) -> None:
        owners = {"company": (self.company, {"organization": self.organization["id"]})}
        owners.update({name: (api, {}) for name, api in self.engineers.items()})
        for recipient, (api, extra) in owners.items():
            endpoint = api.call(
                "post",
                "webhooks/endpoints/",
                201,
                json={
                    "url": f"{self.receiver.base_url}/{recipient}",
                    "event_types": ["*"],
                    "description": "make demo receiver",
                    **extra,
                },
            )
            self.receiver.secrets[recipient] = endpoint["secret"]
            self.endpoints.append((api, endpoint["id"]))
        self.step(f"Registered webhook endpoints for the company and both engineers at {self.receiver.base_url}")

    def unregister_webhooks(self) -> None:
        """The receiver stops with the demo: endpoints left behind would be retried against a closed port."""
        for api, endpoint_id in self.endpoints:
            try:
                api.call("delete", f"webhooks/endpoints/{endpoint_id}/", 204)
            except DemoError as error:
                say(f"     (could not remove webhook endpoint {endpoint_id}: {error})")

    def onboard(self, name: str) -> None:
        """The engineer's payout account (offline provider): the onboarding page stands in for the provider's."""
        engineer = self.engineers[name]
        status = engineer.call("post", "payments/onboarding/", json={"country": "US"})
        browser = Api(self.base)
        browser.login(self.email(name), PASSWORD)
        url = status["onboarding_url"]
        browser.post_page(url if url.startswith("http") else f"{self.base}{url}")
        wait_for(
            lambda: engineer.call("get", "payments/onboarding/")["transfers_active"],
            what=f"{name}'s payout account",
            timeout=self.timeout,
        )
        self.step(f"{name.title()} onboarded a payout account (offline provider): transfers active")

    def post_job(self) -> dict:
        criteria = json.loads((EXAMPLE / "criteria.json").read_text())
        criteria["tiers"] = DEMO_TIERS
        job = self.company.call(
            "post",
            "jobs/",
            201,
            json={
                "title": "Make our MLP inference faster (make demo)",
                "description": "A 64-256-256-10 MLP answers requests one row at a time; speed it up, same outputs.",
                "hardware_class": self.hardware_class,
                "currency": "USD",
                "budget_min": 50_000,
                "budget_max": 150_000,
                "bidding_deadline": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "criteria": criteria,
                "max_submissions": 2,
                "review_window_hours": 0,
            },
        )
        self.company.call(
            "put",
            f"jobs/{job['id']}/package/",
            files={"file": ("package.tar.gz", directory_tar_gz(EXAMPLE / "package"))},
        )
        hidden = hidden_inputs_archive(seed=secrets.randbelow(10**9))
        self.company.call("put", f"jobs/{job['id']}/hidden-inputs/", files={"file": ("hidden.tar.gz", hidden)})
        job = self.company.call("post", f"jobs/{job['id']}/publish/")
        self.step(
            f"Posted and published job {job['id']} ({job['title']!r}): package, 8 hidden inputs, "
            f"wall-time speedup >= 1.5x, tiers 1.5x -> 60 %, 100x -> 100 %, budget {money(50_000)}-{money(150_000)}, "
            "2 attempts",
            job=job["id"],
        )
        return job

    def calibration(self, job: dict) -> None:
        say("     calibrating: the verification worker runs the baseline against itself (A/A) ...")
        calibrated = wait_for(
            lambda: (
                (body := self.company.call("get", f"jobs/{job['id']}/"))["calibration"].get("status")
                in ("done", "error")
                and body
            ),
            what="the job's calibration",
            timeout=self.timeout,
        )
        calibration = calibrated["calibration"]
        if calibration["status"] != "done":
            raise DemoError(f"calibration failed: {calibration}")
        floors = [
            f"{entry.get('metric')}: run-to-run CV {entry.get('run_to_run_cv', 0) * 100:.1f} %, "
            f"smallest verifiable speedup {entry.get('smallest_verifiable_speedup') or 0:.2f}x"
            for entry in calibration.get("criteria", [])
        ]
        self.step("Calibration done, noise floor: " + ("; ".join(floors) or "no speedup criterion measured"))
        for flag in calibration.get("flags", []):
            say(f"     flag: {flag}")
        self.summary["calibration"] = calibration

    def bids(self, job: dict) -> tuple[dict, dict]:
        ada = self.engineers["ada"].call(
            "post",
            f"jobs/{job['id']}/bids/",
            201,
            json={"amount": BID_AMOUNT, "estimated_days": 5, "proposal": "Batch the layers into matrix products."},
        )
        grace = self.engineers["grace"].call(
            "post",
            f"jobs/{job['id']}/bids/",
            201,
            json={"amount": OTHER_BID_AMOUNT, "estimated_days": 3, "proposal": "Rewrite the kernels in C."},
        )
        self.step(f"Ada bid {money(BID_AMOUNT)} (5 days), Grace bid {money(OTHER_BID_AMOUNT)} (3 days)")
        return ada, grace

    def award_and_fund(self, bid: dict) -> dict:
        contract = self.company.call("post", f"bids/{bid['id']}/accept/", 201)
        self.step(f"The company accepted Ada's bid: contract {contract['id']}", contract=contract["id"])
        funding = self.company.call("post", f"contracts/{contract['id']}/fund/")
        try:
            self.company.call(
                "post",
                f"payments/offline/payment-intents/{funding['payment_intent_id']}/confirm/",
                json={"outcome": "succeed"},
            )
        except DemoError as error:
            raise DemoError(f"{error} (the demo pays with the offline provider, `make run`'s default)") from error
        wait_for(
            lambda: self.company.call("get", f"contracts/{contract['id']}/")["status"] == "active",
            what="the contract to be funded",
            timeout=self.timeout,
        )
        contract = self.company.call("get", f"contracts/{contract['id']}/")
        escrow = self.company.call("get", f"payments/escrows/{contract['escrow']}/")
        self.step(
            f"Funded through the offline provider ({funding['payment_intent_id']}): escrow holds "
            f"{money(escrow['funded'], escrow['currency'])} (bid {money(escrow['amount'], escrow['currency'])} "
            f"+ platform fee {money(escrow['fee'], escrow['currency'])}); contract active",
            escrow=escrow["id"],
        )
        return contract

    def submit(self, contract: dict, candidate: str, notes: str) -> dict:
        engineer = self.engineers["ada"]
        archive = directory_tar_gz(EXAMPLE / "candidates" / candidate)
        submission = engineer.call(
            "post",
            f"contracts/{contract['id']}/submissions/",
            201,
            files={"file": (f"{candidate}.tar.gz", archive)},
            data={"notes": notes},
        )
        self.step(
            f"Ada submitted the {candidate!r} candidate: submission {submission['id']}", submission=submission["id"]
        )
        last_line = ""

        def finished():
            nonlocal last_line
            body = engineer.call("get", f"submissions/{submission['id']}/")
            runs = engineer.call("get", f"submissions/{submission['id']}/verification/")["results"]
            if runs:
                line = progress_line(runs[0])
                if line != last_line:
                    say(f"     {line}")
                    last_line = line
            return body["status"] not in ("received", "verifying") and body

        return wait_for(finished, what=f"verification of submission {submission['id']}", timeout=self.timeout)

    def escrow_when(self, contract: dict, predicate, what: str) -> dict:
        return wait_for(
            lambda: predicate(body := self.company.call("get", f"payments/escrows/{contract['escrow']}/")) and body,
            what=what,
            timeout=self.timeout,
        )

    def story(self) -> None:
        self.signup()
        self.register_webhooks()
        self.onboard("ada")
        job = self.post_job()
        self.calibration(job)
        ada_bid, _ = self.bids(job)
        contract = self.award_and_fund(ada_bid)

        passed = self.submit(contract, "fast", "Batched matrix products.")
        if passed["status"] != "passed":
            raise DemoError(f"the fast candidate was expected to pass, got {passed['status']}")
        run = self.company.call("get", f"submissions/{passed['id']}/verification/")["results"][0]
        tier = DEMO_TIERS[run["tier"]] if run.get("tier") is not None else None
        self.step(
            f"PASS: speedup about {run['speedup_estimate']:.1f}x, tier {tier['speedup']:g}x reached "
            f"({run['payout_fraction_bps'] / 100:g} % of the bid); the 100x stretch tier was not",
            run=run["id"],
        )
        escrow = self.escrow_when(contract, lambda e: e["released"] > 0, "the release of the earned tier")
        self.step(
            f"Escrow released {money(escrow['released'], escrow['currency'])} to Ada "
            f"(paid out {money(escrow['paid'], escrow['currency'])}); {money(escrow['held'], escrow['currency'])} still held "
            "for the stretch tier"
        )

        say("     Ada tries for the stretch tier with her last attempt: the float32 candidate, which drops a bias.")
        failed = self.submit(contract, "wrong", "float32 everywhere: faster still.")
        if failed["status"] != "failed":
            raise DemoError(f"the wrong candidate was expected to fail, got {failed['status']}")
        wrong_run = self.company.call("get", f"submissions/{failed['id']}/verification/")["results"][0]
        correctness = (wrong_run.get("report") or {}).get("correctness", {})
        self.step(
            f"FAIL: {wrong_run.get('reason') or 'correctness failed on the hidden inputs'}"
            f" (correctness passed: {correctness.get('passed')}); no attempts left, so the contract settles"
        )
        escrow = self.escrow_when(contract, lambda e: e["refunded"] > 0, "the refund of the remainder")
        self.step(
            f"Escrow refunded {money(escrow['refunded'], escrow['currency'])} to the company; "
            f"released {money(escrow['released'], escrow['currency'])}, fee kept "
            f"{money(escrow['fee_kept'], escrow['currency'])}, state {escrow['state']}"
        )
        self.summary["escrow"] = {key: escrow[key] for key in escrow if key != "lines"}

        self.wait_for_events()
        self.save_artifacts(passed, run)

    def wait_for_events(self) -> None:
        wanted = {"company": set(KEY_EVENTS), "ada": set(KEY_EVENTS) - {"job.published", "job.calibrated"}}

        def missing() -> dict[str, set[str]]:
            return {who: types - self.receiver.types_for(who) for who, types in wanted.items()}

        try:
            wait_for(lambda: not any(missing().values()), what="the webhook events", timeout=min(self.timeout, 120))
        except DemoError as error:
            raise DemoError(f"{error}; still missing: {missing()}") from error
        if self.receiver.rejected:
            raise DemoError(f"{len(self.receiver.rejected)} webhook request(s) failed signature verification")
        count = len(self.receiver.events)
        self.step(f"The receiver verified {count} signed webhook events, every key event for the company and for Ada")
        self.summary["webhook_events"] = list(self.receiver.events)

    def save_artifacts(self, submission: dict, run: dict) -> None:
        path = f"submissions/{submission['id']}/verification/{run['id']}"
        wait_for(
            lambda: self.company.call("get", f"submissions/{submission['id']}/verification/")["results"][0]["has_plot"],
            what="the report plot",
            timeout=self.timeout,
        )
        run = self.company.call("get", f"submissions/{submission['id']}/verification/")["results"][0]
        (self.out / "report-plot.png").write_bytes(self.company.raw(f"{path}/plot.png"))
        (self.out / "report-plot.svg").write_bytes(self.company.raw(f"{path}/plot.svg"))
        (self.out / "report.json").write_text(json.dumps(run["report"], indent=2))
        (self.out / "certificate.json").write_text(json.dumps(run["certificate"], indent=2))
        keys = self.company.call("get", "verification/keys/")
        key = next((k for k in keys if k["key_id"] == run["certificate"]["key_id"]), None)
        if key is None:
            raise DemoError(f"no published signing key {run['certificate']['key_id']}")
        (self.out / "signing-key.pub.pem").write_text(key["public_key_pem"])
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "verification.runner",
                "verify-certificate",
                str(self.out / "certificate.json"),
                "--public-key",
                str(self.out / "signing-key.pub.pem"),
                "--report",
                str(self.out / "report.json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise DemoError(f"the certificate did not verify: {check.stdout}{check.stderr}")
        self.step(f"Certificate verified with the published key: {check.stdout.strip()}")
        self.summary["certificate_check"] = check.stdout.strip()
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2))
        (self.out / "summary.txt").write_text("\n".join(step["line"] for step in self.summary["steps"]) + "\n")
        say(f"\nDone. Report plot, certificate and summary: {self.out}")


class ServiceDown(Exception):
    pass


def progress_line(run: dict) -> str:
    progress = run.get("progress") or {}
    if run["status"] in ("queued", "pending") or not progress:
        return f"verification run {run['id']}: {run['status']}"
    parts = [f"verification run {run['id']}: {run['status']}", f"phase {progress.get('phase')}"]
    if progress.get("pairs_budget"):
        parts.append(f"pairs {progress.get('pairs_done')}/{progress.get('pairs_budget')}")
    if progress.get("estimate"):
        parts.append(f"speedup estimate {progress['estimate']:.2f}x")
    if run.get("decision"):
        parts.append(f"decision {run['decision']}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    port = os.environ.get("SPEEDPROOF_PORT", "8000")
    parser.add_argument("--url", default=os.environ.get("SPEEDPROOF_URL", f"http://127.0.0.1:{port}"))
    parser.add_argument("--out", type=Path, help="where the plot, certificate and summary go (default var/demo/<time>)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each step (default 600)")
    parser.add_argument("--hardware-class", default=os.environ.get("LOCAL_HARDWARE_CLASS", "cpu-x86"))
    args = parser.parse_args(argv)
    out = args.out or ROOT / "var" / "demo" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    demo = Demo(args.url, out, args.timeout, args.hardware_class)
    try:
        demo.run()
    except ServiceDown as error:
        say(str(error))
        return 2
    except DemoError as error:
        say(f"\nDemo stopped: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
