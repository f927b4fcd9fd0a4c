"""Calls started together on threads of their own, each with its own PostgreSQL connection (races for real)."""

import threading

from django.db import connection

from common.errors import DomainError


def race(*calls) -> list[str]:
    """Run `calls` at once; the sorted outcomes: "done", or the code of the DomainError a call raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[str] = []

    def run(call):
        try:
            barrier.wait()
            call()
            outcomes.append("done")
        except DomainError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(outcomes)
