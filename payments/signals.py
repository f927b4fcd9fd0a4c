"""Escrow signals, sent inside the transaction that changes the escrow (receivers must only touch the DB).

Every escrow signal (and `payout_reversed`) carries `escrow_id` and `reference`; `escrow_funding_failed` also carries `reason`,
`escrow_cancelled` and `escrow_closed` carry `reason` and `status`. Payout signals carry the engineer's `user_id`.
"""

from django.dispatch import Signal

escrow_funded = Signal()
escrow_funding_failed = Signal()
escrow_cancelled = Signal()
escrow_closed = Signal()

# What the engineer's payout account shows changed (requirements, transfers, disconnection, reconnection).
payout_account_updated = Signal()
# A payout to the engineer's bank reached its end: `payout` is a dict with id, status (paid | failed), amount,
# currency, failure_code; sent once per payout and status.
payout_settled = Signal()
# A transfer to the engineer was reversed (a chargeback lost after they were paid): carries the engineer's `user_id`,
# `amount`, `currency`, `transfer_id` and `reason`.
payout_reversed = Signal()
# Asked when an operator submits chargeback evidence: a receiver that knows the escrow's `reference` returns a dict
# with `summary` (text: what was delivered and decided), `certificate` and `report` (JSON-able dicts); payments
# turns them into the dispute's evidence. Sent outside any transaction; receivers only read.
dispute_evidence_requested = Signal()
