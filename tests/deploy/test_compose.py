"""docker-compose.yml is valid for Debian's docker-compose and runs what the deployment needs.

No Docker engine runs here: `docker-compose config` only parses, interpolates and validates the file.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_COMPOSE = "/usr/bin/docker-compose"
# Services that run the Django app; the verification host deliberately does not.
APP_SERVICES = {"migrate", "web", "worker", "beat"}
ENV = {"DJANGO_SECRET_KEY": "compose-test-only"}


def _compose(*args: str, extra_env: dict | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    if not os.path.exists(DOCKER_COMPOSE):
        pytest.fail(f"{DOCKER_COMPOSE} is missing: apt-get install -y --no-install-recommends docker-compose")
    env = {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("COMPOSE_")}
    env.update(extra_env or {})
    return subprocess.run(
        [DOCKER_COMPOSE, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The configuration as docker-compose resolves it (anchors merged, variables interpolated)."""
    result = _compose("config", extra_env=ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _command(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_docker_compose_config_is_valid():
    result = _compose("config", "-q", extra_env=ENV)
    assert result.returncode == 0, result.stderr


def test_the_secret_key_is_required():
    result = _compose("config", "-q", drop=("DJANGO_SECRET_KEY",))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_expected_services_each_with_a_healthcheck(resolved):
    services = resolved["services"]
    assert set(services) >= {"postgres", "redis", *APP_SERVICES}
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["redis"]["image"].split(":")[1].startswith("7")
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_application_services_share_one_image_definition():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    shared = raw["x-app"]
    services = raw["services"]
    for name in APP_SERVICES:
        # YAML merge keys resolve to the same build and image for every application service.
        assert services[name]["image"] == shared["image"], name
        assert services[name]["build"] == shared["build"], name
    assert shared["build"]["dockerfile"] == "Dockerfile"


def test_environment_comes_from_variables(resolved):
    for name in APP_SERVICES:
        environment = resolved["services"][name]["environment"]
        for key in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "PAYMENT_PROVIDER"):
            assert environment.get(key), f"{name}: {key}"
        assert environment["DJANGO_SETTINGS_MODULE"] == "marketplace.settings.production"
    overridden = _compose(
        "config", extra_env={**ENV, "PAYMENT_PROVIDER": "offline", "REDIS_URL": "redis://cache:6379/3"}
    )
    web = yaml.safe_load(overridden.stdout)["services"]["web"]["environment"]
    assert (web["PAYMENT_PROVIDER"], web["REDIS_URL"]) == ("offline", "redis://cache:6379/3")


def test_verification_host_gets_no_database_or_payment_credentials(resolved):
    verify = resolved["services"]["verify-cpu-x86"]
    assert set(verify["environment"]) == {"CELERY_BROKER_URL", "VERIFICATION_SIGNING_KEY_PATH", "WORKER_NAME"}
    assert set(verify["depends_on"]) == {"redis"}
    assert "-A verification.worker" in " ".join(verify["healthcheck"]["test"])


def test_processes_and_queues(resolved):
    services = resolved["services"]
    assert _command(services["web"]).startswith("gunicorn marketplace.wsgi")
    assert _command(services["worker"]).startswith("celery -A marketplace worker -Q default ")
    verify = _command(services["verify-cpu-x86"])
    assert verify.startswith("celery -A verification.worker worker -Q verify.cpu-x86 ")
    assert "--concurrency 1" in verify and "--prefetch-multiplier 1" in verify
    assert _command(services["beat"]).startswith("celery -A marketplace beat")
    assert "migrate" in _command(services["migrate"])
    for name in APP_SERVICES - {"migrate"}:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_builds_the_runtime_the_services_need():
    dockerfile = DOCKERFILE.read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    assert "bubblewrap" in dockerfile
    assert (ROOT / "requirements.txt").exists()
    requirements = (ROOT / "requirements.txt").read_text().lower()
    for package in ("gunicorn==", "celery", "django=="):
        assert package in requirements
