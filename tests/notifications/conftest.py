"""Webhook fixtures: a real HTTP receiver on 127.0.0.1 in a thread, and deliveries recorded instead of queued."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
            status, body, headers = state.answers.pop(0) if state.answers else state.default
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    yield state
    server.shutdown()
    server.server_close()


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
