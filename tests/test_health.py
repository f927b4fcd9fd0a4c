"""Liveness is free; readiness probes the database, the cache and the broker, reusing results for a few seconds."""

import re
from pathlib import Path

import pytest
import yaml

from common import health

pytestmark = pytest.mark.django_db

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


@pytest.fixture(autouse=True)
def _fresh_probes():
    health.probe_results.clear()
    yield
    health.probe_results.clear()


@pytest.fixture
def broker_probes(monkeypatch):
    """How many times the broker was really probed (the probe itself still runs)."""
    calls = []
    original = health.CeleryBroker.run

    def counted(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(health.CeleryBroker, "run", counted)
    return calls


def test_liveness_needs_no_credentials_and_runs_no_query(client, django_assert_num_queries, broker_probes):
    with django_assert_num_queries(0):
        response = client.get("/health/live/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert broker_probes == []
    assert client.post("/health/live/").status_code == 405


@pytest.mark.parametrize("path", ["/health/", "/health/ready/"])
def test_readiness_reports_each_dependency(client, path):
    response = client.get(f"{path}?format=json")
    assert response.status_code == 200, response.content
    assert {"Database", "Cache", "CeleryBroker"} <= {name.split("(")[0] for name in response.json()}


def test_readiness_reuses_probe_results_for_the_configured_time(client, settings, broker_probes):
    settings.HEALTH_PROBE_CACHE_SECONDS = 60
    first = client.get("/health/ready/?format=json")
    second = client.get("/health/?format=json")
    assert broker_probes == [1]
    assert first.json() == second.json()
    assert client.get("/health/ready/?format=text").status_code == 200
    assert broker_probes == [1]

    settings.HEALTH_PROBE_CACHE_SECONDS = 0
    client.get("/health/ready/?format=json")
    client.get("/health/ready/?format=json")
    assert broker_probes == [1, 1, 1]


def test_a_failed_probe_is_reported_until_it_is_probed_again(client, settings):
    settings.HEALTH_PROBE_CACHE_SECONDS = 60
    reachable = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    down = client.get("/health/ready/?format=json")
    assert down.status_code == 500
    assert "unreachable" in next(value for name, value in down.json().items() if name.startswith("CeleryBroker"))
    settings.CELERY_BROKER_URL = reachable
    assert client.get("/health/ready/?format=json").status_code == 500  # still the cached result
    assert client.get("/health/live/").status_code == 200  # liveness does not depend on the broker
    health.probe_results.clear()
    assert client.get("/health/ready/?format=json").status_code == 200


def test_containers_probe_liveness():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    web_check = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    assert "/health/live/" in web_check


def test_health_routes_stay_reachable_over_plain_http_in_production():
    source = (Path(__file__).resolve().parent.parent / "marketplace/settings/production.py").read_text()
    default = re.search(r'"DJANGO_SECURE_REDIRECT_EXEMPT", default=\[r"([^"]+)"', source).group(1)
    for path in ("health/", "health/live/", "health/ready/"):
        assert re.match(default, path), path
    assert not re.match(default, "health/other/")
