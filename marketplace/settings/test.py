"""`make test`: the real services — PostgreSQL and Redis — with fast password hashing."""

import os
from pathlib import Path

from .base import *  # noqa: F403
from .base import BASE_DIR, env

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/test")}
# Tests open a connection per request (0); benchmarks that serve with these settings set it as production does.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")


def _redis_database_of_this_test_worker(url: str) -> str:
    """Under pytest-xdist (`make check`) each worker process gets its own Redis database, as pytest-django gives it
    its own PostgreSQL database: the suite clears the cache around every test, which must not reach another worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    base, _, database = url.rpartition("/")
    return f"{base}/{(int(database or 0) + 2 + int(worker[2:])) % 16}"


REDIS_URL = _redis_database_of_this_test_worker(REDIS_URL)
CACHES = {"default": {"BACKEND": "common.cache.ProjectRedisCache", "LOCATION": REDIS_URL}}
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/1")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "test-media")))
REST_FRAMEWORK = {**REST_FRAMEWORK}  # noqa: F405
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"anon": "10000/min", "user": "100000/min"}
# The test platform settles in several currencies (as a Stripe account with extra settlement currencies enabled),
# so the suite covers zero- and three-decimal amounts; tests that check the settlement rule narrow it.
PLATFORM_SETTLEMENT_CURRENCIES = ["USD", "EUR", "JPY", "KWD"]
