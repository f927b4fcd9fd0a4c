"""The embedded defaults of `make run` (no DATABASE_URL, REDIS_URL or CELERY_BROKER_URL): a fresh checkout migrates,
several processes share one SQLite file without "database is locked", and they coordinate through a cache they all
see. Each check runs real processes with the local settings, in a var/ folder of its own."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.embedded import embedded_environment

ROOT = Path(__file__).resolve().parent.parent


def _embedded_environment(var: Path) -> dict[str, str]:
    return embedded_environment(var, DJANGO_SETTINGS_MODULE="marketplace.settings.local")


def _python(var: Path, code: str, *, background: bool = False):
    command = [sys.executable, "-c", "import django; django.setup()\n" + textwrap.dedent(code)]
    if background:
        return subprocess.Popen(
            command, cwd=ROOT, env=_embedded_environment(var), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(
        command, cwd=ROOT, env=_embedded_environment(var), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def migrated_var(tmp_path_factory) -> Path:
    """`manage.py migrate` in a checkout whose var/ folder does not exist yet."""
    var = tmp_path_factory.mktemp("embedded") / "not" / "yet" / "var"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=_embedded_environment(var),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return var


def test_migrate_creates_what_the_default_database_needs(migrated_var):
    assert (migrated_var / "db.sqlite3").is_file()
    result = _python(
        migrated_var,
        """
        from django.db import connection
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            print(cursor.fetchone()[0])
            cursor.execute("PRAGMA busy_timeout")
            print(cursor.fetchone()[0])
        """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    journal_mode, busy_timeout = result.stdout.split()
    assert journal_mode == "wal"
    assert int(busy_timeout) >= 5000


WRITER = """
import sys
import time
from django.db import transaction
from common.models import IdempotencyRecord
from accounts.models import User

user, _ = User.objects.get_or_create(email="writer@example.com", defaults={"name": "Writer"})
for number in range(40):
    # Read, then write, in one transaction: the shape of every service function (lock, check, change).
    with transaction.atomic():
        count = IdempotencyRecord.objects.filter(user=user).count()
        time.sleep(0.005)  # the work between a service's checks and its write
        IdempotencyRecord.objects.create(
            user=user, key=f"{sys.argv[1] if len(sys.argv) > 1 else WORKER}-{number}", endpoint="load",
            request_fingerprint=str(count),
        )
print("ok")
"""


def test_several_processes_write_one_sqlite_file_without_locking_errors(migrated_var):
    _python(migrated_var, 'from accounts.models import User; User.objects.create(email="writer@example.com")')
    writers = [
        _python(migrated_var, WRITER.replace("WORKER", repr(f"w{index}")), background=True) for index in range(4)
    ]
    outcomes = [writer.communicate(timeout=240) for writer in writers]
    failures = [stderr[-1500:] for (stdout, stderr), writer in zip(outcomes, writers) if writer.returncode != 0]
    assert failures == [], failures
    result = _python(
        migrated_var, "from common.models import IdempotencyRecord; print(IdempotencyRecord.objects.count())"
    )
    assert result.stdout.strip() == "160"


def test_processes_share_one_cache_without_redis(tmp_path):
    var = tmp_path / "var"
    writer = _python(var, "from django.core.cache import cache; print(cache.add('drain-scheduled', 1, timeout=60))")
    assert writer.stdout.strip() == "True", writer.stderr[-2000:]
    # Another process (a worker) sees the key, and deleting it there is seen by the first kind of process again.
    reader = _python(
        var,
        """
        from django.core.cache import cache
        print(cache.add('drain-scheduled', 1, timeout=60))
        cache.delete('drain-scheduled')
        """,
    )
    assert reader.stdout.strip() == "False", reader.stderr[-2000:]
    again = _python(var, "from django.core.cache import cache; print(cache.add('drain-scheduled', 1, timeout=60))")
    assert again.stdout.strip() == "True"
