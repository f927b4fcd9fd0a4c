"""Production settings pass Django's deployment checks, and HTML pages carry a Content-Security-Policy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import StaffFactory

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "marketplace.settings.production",
    "DJANGO_SECRET_KEY": "deploy-check-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ",
    "DJANGO_ALLOWED_HOSTS": "speedproof.example",
    "DATABASE_URL": "postgres://speedproof@db.invalid:5432/speedproof",
    "REDIS_URL": "redis://redis.invalid:6379/0",
    "CELERY_BROKER_URL": "redis://redis.invalid:6379/1",
    "PAYMENT_PROVIDER": "stripe",
    "STRIPE_SECRET_KEY": "sk_test_deploy_check_only",
}


def _production(command: list[str], **extra: str) -> subprocess.CompletedProcess:
    # Only what a deployment sets: nothing from this machine's environment leaks into the settings.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **PRODUCTION_ENV, **extra}
    return subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_the_deployment_checks():
    result = _production(["check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_security_settings():
    script = (
        "from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.CSRF_COOKIE_SECURE,"
        " s.CSRF_COOKIE_HTTPONLY, s.SECURE_CONTENT_TYPE_NOSNIFF, s.X_FRAME_OPTIONS, s.SECURE_REFERRER_POLICY)"
    )
    default = _production(["shell", "-c", script])
    assert default.returncode == 0, default.stderr
    assert default.stdout.split("\n")[-2] == (
        "31536000 True False True ('HTTP_X_FORWARDED_PROTO', 'https') True True True True True DENY "
        "strict-origin-when-cross-origin"
    )
    direct = _production(["shell", "-c", script], DJANGO_SECURE_PROXY_SSL_HEADER="", DJANGO_SECURE_HSTS_PRELOAD="1")
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout.split("\n")[-2].startswith("31536000 True True True None ")


@pytest.mark.django_db
def test_admin_pages_carry_the_page_policy(client):
    login = client.get("/admin/login/")
    assert login.status_code == 200
    policy = login["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    client.force_login(StaffFactory(is_superuser=True))
    index = client.get("/admin/")
    assert index.status_code == 200 and index["Content-Security-Policy"] == policy


@pytest.mark.django_db
def test_the_api_docs_get_the_page_policy_plus_blob_workers_and_json_gets_none(client):
    for path in ("/api/docs/", "/api/redoc/"):
        docs = client.get(path)
        assert docs.status_code == 200
        policy = docs["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "worker-src 'self' blob:" in policy
        assert "https://" not in policy and "unsafe-eval" not in policy
    schema = client.get("/api/schema/?format=json")
    assert "Content-Security-Policy" not in schema
