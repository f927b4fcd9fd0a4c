"""Suite-wide fixtures. The suite runs on the real PostgreSQL and Redis; it stops at once if either is down."""

import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.services import api_token_create
from verification.runner.certificate import generate_signing_key, public_key_pem
from verification.services import signing_key_register


def _require_service(name: str, url: str, how_to_start: str) -> None:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port), timeout=3).close()
    except OSError as exc:
        pytest.exit(
            f"{name} is not reachable at {parsed.hostname}:{parsed.port} ({exc}). Start it with: {how_to_start}",
            returncode=3,
        )


def pytest_configure(config) -> None:
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("The test suite runs on PostgreSQL; set DATABASE_URL to a postgres:// URL.", returncode=3)
    _require_service(
        "PostgreSQL",
        f"postgres://{database.get('HOST') or '127.0.0.1'}:{database.get('PORT') or 5432}",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    )
    _require_service(
        "Redis",
        settings.REDIS_URL,
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    )


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def api_client_for():
    """An API client authenticated the way real clients are: a Bearer token."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            issued = api_token_create(user=user, name="test")
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        return client

    return make


@pytest.fixture
def signing_key(db):
    key = generate_signing_key()
    signing_key_register(public_key_pem=public_key_pem(key).decode())
    return key


@pytest.fixture
def dispatched(monkeypatch):
    """Dispatches recorded instead of sent to the broker (the end-to-end tests use a real one)."""
    sent = []
    monkeypatch.setattr("verification.dispatch.send_run", sent.append)
    return sent
