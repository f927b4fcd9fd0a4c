"""The environment of `make run`'s embedded defaults for processes a test starts: the suite's own services and
settings (PostgreSQL, Redis, the test settings module, its media folder) must not leak into them."""

import os
from pathlib import Path

SUITE_ONLY = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT"}


def embedded_environment(var: Path, **extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in SUITE_ONLY}
    environment.update(SPEEDPROOF_VAR_DIR=str(var), **extra)
    return environment
