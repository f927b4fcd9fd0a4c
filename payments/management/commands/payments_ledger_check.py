"""Check the ledger invariant: every transaction balances; per escrow released + refunded + fee kept + held
= funded, and nothing is negative. Exits 1 and lists the problems when it does not hold."""

from django.core.management.base import BaseCommand, CommandError

from payments.ledger import ledger_invariant_violations


class Command(BaseCommand):
    help = "Check the payments ledger invariant (exit status 1 on any violation)."

    def handle(self, *args, **options):
        problems = ledger_invariant_violations()
        if problems:
            for line in problems:
                self.stderr.write(line)
            raise CommandError(f"{len(problems)} ledger invariant violation(s).")
        self.stdout.write(self.style.SUCCESS("Ledger invariant holds."))
