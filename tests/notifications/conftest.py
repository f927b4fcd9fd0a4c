"""Webhook fixtures: a real HTTP receiver on 127.0.0.1 in a thread, and deliveries recorded instead of queued."""

from dataclasses import dataclass, field

import pytest

from tests.loopback import loopback_server


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next queued (status, body, headers), then with `default`."""

    url: str
    requests: list[Received] = field(default_factory=list)
    answers: list[tuple[int, bytes, dict]] = field(default_factory=list)
    default: tuple[int, bytes, dict] = (200, b"ok", {})

    def answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.answers.append((status, body, headers or {}))


@pytest.fixture
def receiver():
    state = Receiver(url="")

    def respond(path: str, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
        state.requests.append(Received(path, headers, body))
        return state.answers.pop(0) if state.answers else state.default

    with loopback_server(respond) as url:
        state.url = url
        yield state


@pytest.fixture
def local_webhooks(settings):
    """What `make run` allows: plain http to this machine."""
    settings.WEBHOOKS_REQUIRE_HTTPS = False
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    return settings


@pytest.fixture
def queued(monkeypatch):
    """Delivery ids the outbox queued after commit (the tests run the task themselves)."""
    sent: list[int] = []
    monkeypatch.setattr("notifications.tasks.delivery_send.delay", sent.append)
    return sent
