"""The ledger: balanced, append-only, one transaction per key; the invariant command."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from payments.ledger import A, ledger_invariant_violations, ledger_post
from payments.models import LedgerEntry, LedgerTransaction

from .conftest import open_escrow

pytestmark = pytest.mark.django_db


class _Rollback(Exception):
    pass


@pytest.fixture
def escrow(parties):
    admin, org, engineer = parties
    return open_escrow(org, engineer)


def test_post_is_balanced_and_idempotent(escrow):
    txn, created = ledger_post(
        escrow=escrow,
        idempotency_key="k1",
        kind="funding",
        lines=[(A.HELD, 500), (A.COMPANY_FUNDING, -500)],
        provider_object_id="pi_1",
    )
    again, created_again = ledger_post(
        escrow=escrow, idempotency_key="k1", kind="funding", lines=[(A.HELD, 999), (A.COMPANY_FUNDING, -999)]
    )
    assert created and not created_again and again.pk == txn.pk
    assert LedgerEntry.objects.filter(transaction=txn).count() == 2
    with pytest.raises(ValueError):
        ledger_post(escrow=escrow, idempotency_key="k2", kind="bad", lines=[(A.HELD, 1)])


def test_ledger_rows_cannot_be_changed_or_deleted(escrow):
    txn, _ = ledger_post(
        escrow=escrow, idempotency_key="k1", kind="funding", lines=[(A.HELD, 5), (A.COMPANY_FUNDING, -5)]
    )
    entry = txn.entries.first()
    for attempt in (
        lambda: entry.save(),
        lambda: entry.delete(),
        lambda: LedgerEntry.objects.update(amount=1),
        lambda: LedgerTransaction.objects.all().delete(),
    ):
        with pytest.raises(RuntimeError):
            attempt()
    for sql in ("UPDATE payments_ledgerentry SET amount = 7", "DELETE FROM payments_ledgertransaction"):
        with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)


def test_invariant_command(escrow, capsys):
    ledger_post(escrow=escrow, idempotency_key="k1", kind="funding", lines=[(A.HELD, 500), (A.COMPANY_FUNDING, -500)])
    call_command("payments_ledger_check")
    assert "holds" in capsys.readouterr().out
    with pytest.raises(_Rollback), transaction.atomic():
        # written behind the service's back: money held that was never funded, and a negative bucket
        txn = LedgerTransaction.objects.create(escrow=escrow, idempotency_key="broken", kind="x", currency="USD")
        LedgerEntry.objects.bulk_create([LedgerEntry(transaction=txn, escrow=escrow, account=A.REFUNDS, amount=-50)])
        problems = ledger_invariant_violations()
        assert any("does not balance" in p for p in problems)
        assert any("refunds is negative" in p for p in problems)
        assert any("!= funded" in p for p in problems)
        with pytest.raises(CommandError):
            call_command("payments_ledger_check")
        raise _Rollback
    assert ledger_invariant_violations() == []
