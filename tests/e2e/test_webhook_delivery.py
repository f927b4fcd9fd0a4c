"""Outbound webhooks with real processes: an engineer registers an endpoint through the API and places a bid; the
default Celery worker delivers `bid.placed` to a receiver on 127.0.0.1 that refuses it twice and then takes it,
and a redelivery asked for through the API arrives again. The receiver checks every signature with its own
code, as a customer's would, not with the project's `signature_verify`."""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from jobs.models import Job
from tests.factories import CompanyAdminFactory, EngineerFactory
from tests.factories.jobs import JobFactory
from tests.loopback import loopback_server

from .conftest import wait_for
from .test_marketplace_flow import Api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Small enough that three attempts take seconds; with the production 30 s the waits below time out.
RETRY_BASE_SECONDS = 4
REFUSED_ATTEMPTS = 2
TOLERANCE_SECONDS = 300


@pytest.fixture
def default_worker_environment() -> dict[str, str]:
    return {
        "WEBHOOKS_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS),
        # The receiver is plain http on this machine, which production settings refuse.
        "WEBHOOKS_REQUIRE_HTTPS": "false",
        "WEBHOOKS_ALLOW_LOOPBACK": "true",
    }


def signature_valid(*, header: str, body: bytes, secret: str, now: float) -> bool:
    """`Speedproof-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, checked the way docs/webhooks.md tells
    a receiver to: exactly one recent `t`, and any `v1` matching."""
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [value for key, value in pairs if key == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    if abs(now - int(timestamps[0])) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in pairs if key == "v1")


@dataclass
class Arrival:
    event_id: str
    headers: dict
    body: bytes
    signed: bool
    answered: int
    at: float  # wall clock, comparable with the attempts' `started_at`


@dataclass
class SigningReceiver:
    """Refuses (500) the first REFUSED_ATTEMPTS correctly signed requests of each event, then accepts (200);
    answers 400 to a request whose signature does not verify."""

    url: str = ""
    secret: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, headers: dict, body: bytes) -> int:
        now = time.time()
        signed = bool(self.secret) and signature_valid(
            header=headers.get("Speedproof-Signature", ""), body=body, secret=self.secret, now=now
        )
        try:
            event_id = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            event_id = ""
        with self.lock:
            seen = sum(1 for arrival in self.arrivals if arrival.signed and arrival.event_id == event_id)
            answered = 400 if not signed else 500 if seen < REFUSED_ATTEMPTS else 200
            self.arrivals.append(Arrival(event_id, headers, body, signed, answered, now))
        return answered

    def of(self, event_id: str) -> list[Arrival]:
        with self.lock:
            return [arrival for arrival in self.arrivals if arrival.event_id == event_id]


@pytest.fixture
def signing_receiver():
    state = SigningReceiver()

    def respond(path: str, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
        status = state.take(headers, body)
        return status, b"ok" if status == 200 else b"refused", {}

    with loopback_server(respond, path="/speedproof-hooks") as url:
        state.url = url
        yield state


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_refused_event_is_retried_with_backoff_by_the_worker_and_redelivered_signed(
    stack, settings, signing_receiver
):
    # The live server checks the URL at registration; the worker got the same through its environment.
    settings.WEBHOOKS_REQUIRE_HTTPS = False
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    admin, engineer_user = CompanyAdminFactory(), EngineerFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin, status=Job.Status.OPEN)
    engineer = Api(stack.url, engineer_user)
    assert stack.default.environment()["WEBHOOKS_RETRY_BASE_SECONDS"] == str(RETRY_BASE_SECONDS)

    endpoint = engineer(
        "post",
        "webhooks/endpoints/",
        201,
        json={"url": signing_receiver.url, "event_types": ["bid.placed"], "description": "e2e receiver"},
    )
    assert endpoint["secret"].startswith("whsec_")
    signing_receiver.secret = endpoint["secret"]
    bid = engineer(
        "post", f"jobs/{job.pk}/bids/", 201, json={"amount": 200_000, "estimated_days": 5, "proposal": "Fuse."}
    )

    # Attempt 1 at once, then waits of 2-3 s and 4-7 s: done well within the timeout (production's base is not).
    [delivery] = wait_for(
        lambda: (
            (log := engineer("get", f"webhooks/endpoints/{endpoint['id']}/deliveries/")["results"])
            and log[0]["status"] == "succeeded"
            and log
        ),
        timeout=40,
        what="the delivery to succeed",
    )
    event_id = delivery["event"]["id"]
    assert delivery["event"]["type"] == "bid.placed"
    assert delivery["attempt_count"] == REFUSED_ATTEMPTS + 1
    assert delivery["last_attempt"]["status_code"] == 200

    arrivals = signing_receiver.of(event_id)
    assert [(arrival.signed, arrival.answered) for arrival in arrivals] == [(True, 500), (True, 500), (True, 200)]
    assert len(signing_receiver.arrivals) == 3, "something else reached the receiver"
    for arrival in arrivals:
        assert arrival.headers["Speedproof-Event-Id"] == arrival.headers["Idempotency-Key"] == event_id
        assert arrival.headers["Speedproof-Event-Type"] == "bid.placed"
    assert {arrival.body for arrival in arrivals} == {arrivals[0].body}, "each attempt sends the same event"
    payload = json.loads(arrivals[0].body)
    assert (payload["type"], payload["data"]["id"], payload["data"]["engineer"]["id"]) == (
        "bid.placed",
        bid["id"],
        engineer_user.pk,
    )
    # The receiver's check is not one that passes anything.
    first = arrivals[0]
    header = first.headers["Speedproof-Signature"]
    assert not signature_valid(header=header, body=first.body + b" ", secret=endpoint["secret"], now=first.at)
    assert not signature_valid(header=header, body=first.body, secret="whsec_not-it", now=first.at)
    assert not signature_valid(
        header=header, body=first.body, secret=endpoint["secret"], now=first.at + TOLERANCE_SECONDS + 5
    )

    detail = engineer("get", f"webhooks/deliveries/{delivery['id']}/")
    attempts = detail["attempts"]
    assert [(a["number"], a["status_code"], a["succeeded"]) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert [a["response_excerpt"] for a in attempts] == ["refused", "refused", "ok"]
    # Backoff: each wait is at least the fixed half of its doubling interval (base/2, then base), seen both in
    # the delivery log and by the receiver.
    minimum_waits = [RETRY_BASE_SECONDS / 2, RETRY_BASE_SECONDS]
    logged_gaps = _gaps([_timestamp(a["started_at"]) for a in attempts])
    received_gaps = _gaps([arrival.at for arrival in arrivals])
    assert all(gap >= wait for gap, wait in zip(logged_gaps, minimum_waits, strict=True)), logged_gaps
    assert all(gap >= wait for gap, wait in zip(received_gaps, minimum_waits, strict=True)), received_gaps

    redelivered = engineer("post", f"webhooks/deliveries/{delivery['id']}/redeliver/", 202)
    assert redelivered["status"] == "pending"
    detail = wait_for(
        lambda: (
            (body := engineer("get", f"webhooks/deliveries/{delivery['id']}/"))["status"] == "succeeded"
            and len(body["attempts"]) == 4
            and body
        ),
        timeout=30,
        what="the redelivery",
    )
    assert (detail["attempts"][-1]["number"], detail["attempts"][-1]["status_code"]) == (4, 200)
    arrivals = signing_receiver.of(event_id)
    assert len(arrivals) == 4 and len(signing_receiver.arrivals) == 4
    again = arrivals[-1]
    assert (again.signed, again.answered) == (True, 200)
    assert again.headers["Speedproof-Event-Id"] == again.headers["Idempotency-Key"] == event_id
    assert again.body == arrivals[0].body
