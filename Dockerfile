# One image for every process of the service: web (gunicorn), Celery workers (default and verification
# queues) and beat. docker-compose.yml picks the command; nothing here depends on which one runs.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=marketplace.settings.production \
    MEDIA_ROOT=/app/var/media

# bubblewrap: the verification runner's sandbox (it fails closed without it). util-linux (setpriv) is
# already part of the base image. psycopg[binary] brings its own libpq. gcc + libc6-dev let the runner compile
# its seccomp launcher once per process (verification/runner/seccomp.py); without them it falls back to a Python
# launcher that adds about 11 ms to every measured run.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time with the base settings (production ones need runtime secrets).
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --settings=marketplace.settings.base \
    && useradd --system --create-home --uid 10001 app \
    && mkdir -p /app/var/media \
    && chown -R app:app /app/var

# Web and default workers run unprivileged; the verification worker's service overrides this (bwrap needs root).
USER app
EXPOSE 8000
CMD ["gunicorn", "marketplace.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
