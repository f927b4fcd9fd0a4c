"""Fail at once, with the command that fixes it, when PostgreSQL or Redis is not reachable."""

import os
import socket
import sys
from urllib.parse import urlparse

SERVICES = {
    "PostgreSQL": (
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    "Redis": (
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    ),
}


def main() -> int:
    failed = False
    for name, (url, how_to_start) in SERVICES.items():
        parsed = urlparse(url)
        try:
            socket.create_connection((parsed.hostname, parsed.port), timeout=3).close()
        except OSError as exc:
            failed = True
            print(f"{name} is not reachable at {parsed.hostname}:{parsed.port} ({exc}).", file=sys.stderr)
            print(f"  Start it with: {how_to_start}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
