"""The monthly report for the accountant: per contract and currency, gross collected, Stripe fees, platform fee
kept, refunded, paid to engineers and the platform's net, in currency units, from the ledger only."""

import csv

from django.core.management.base import BaseCommand, CommandError

from common.errors import DomainError
from common.money import Money
from payments.reports import AMOUNT_COLUMNS, payments_month_report


def _units(amount: int, currency: str) -> str:
    return str(Money(amount, currency)).rsplit(" ", 1)[0]


class Command(BaseCommand):
    help = "Print the payments report of one month (UTC): per contract and currency, and a total per currency."

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM, e.g. 2026-11")
        parser.add_argument("--format", choices=["table", "csv"], default="table")

    def handle(self, *args, **options):
        try:
            rows = payments_month_report(month=options["month"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        header = ["month", "reference", "currency", *AMOUNT_COLUMNS]
        lines = [
            [row.month, row.reference, row.currency, *(_units(getattr(row, c), row.currency) for c in AMOUNT_COLUMNS)]
            for row in rows
        ]
        if options["format"] == "csv":
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(lines)
            return
        if not lines:
            self.stdout.write(f"Nothing was booked in {options['month']}.")
            return
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
        for i, line in enumerate([header, *lines]):
            cells = [
                str(cell).ljust(w) if j < 3 else str(cell).rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells).rstrip())
            if i == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
