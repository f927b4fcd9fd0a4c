"""Escrow signals, sent inside the transaction that changes the escrow (receivers must only touch the DB).

Every signal carries `escrow_id` and `reference`; `escrow_funding_failed` also carries `reason`,
`escrow_cancelled` and `escrow_closed` carry `reason` and `status`.
"""

from django.dispatch import Signal

escrow_funded = Signal()
escrow_funding_failed = Signal()
escrow_cancelled = Signal()
escrow_closed = Signal()
