#!/usr/bin/env bash
# `make run`: the whole service on embedded defaults (SQLite, local files, filesystem broker,
# offline payments): web on 127.0.0.1:8000, a Celery worker, a verification worker and beat.
# Ctrl-C stops them all. SPEEDPROOF_VAR_DIR (default var/) holds the database, files, broker and cache;
# SPEEDPROOF_PORT (default 8000) is the web server's port.
set -euo pipefail
cd "$(dirname "$0")/.."
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-marketplace.settings.local}"
export SPEEDPROOF_VAR_DIR="${SPEEDPROOF_VAR_DIR:-$PWD/var}"
PORT="${SPEEDPROOF_PORT:-8000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:$PORT}"
BIN=.venv/bin
HARDWARE_CLASS="${LOCAL_HARDWARE_CLASS:-cpu-x86}"
VAR="$SPEEDPROOF_VAR_DIR"
mkdir -p "$VAR/broker" "$VAR/broker-processed" "$VAR/broker-control" "$VAR/media"

$BIN/python manage.py migrate --no-input
$BIN/python manage.py seed_demo >/dev/null
SIGNING_KEY="$VAR/verification-signing-key.pem"
$BIN/python manage.py verification_key "$SIGNING_KEY"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "Stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

$BIN/celery -A marketplace worker -Q default -n "default@%h" --concurrency 2 --loglevel INFO &
pids+=($!)
# The verification worker loads no Django settings and gets no database URL or payment keys.
env -u DATABASE_URL -u STRIPE_SECRET_KEY -u DJANGO_SECRET_KEY VERIFICATION_SIGNING_KEY_PATH="$SIGNING_KEY" \
  $BIN/celery -A verification.worker worker -Q "verify.$HARDWARE_CLASS" -n "verify@%h" \
  --concurrency 1 --prefetch-multiplier 1 --loglevel INFO &
pids+=($!)
$BIN/celery -A marketplace beat --loglevel INFO --schedule "$VAR/celerybeat-schedule" &
pids+=($!)
$BIN/python manage.py runserver "127.0.0.1:$PORT" --noreload &
pids+=($!)

# The credentials come last, after the servers' banners, so they are not lost among them.
for _ in $(seq 120); do
  $BIN/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/', timeout=2)" \
    2>/dev/null && break
  sleep 0.5
done
cat "$VAR/demo-accounts.txt"
echo "Speedproof is running on http://127.0.0.1:$PORT/ (credentials also in $VAR/demo-accounts.txt). Ctrl-C stops it."
wait -n "${pids[@]}"
