#!/usr/bin/env bash
# The whole suite on PostgreSQL and Redis. Defaults match the README; override with the same variables.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}"
export DJANGO_SETTINGS_MODULE=marketplace.settings.test
.venv/bin/python scripts/check_services.py
exec .venv/bin/python -m pytest "$@"
