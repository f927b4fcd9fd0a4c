"""Domain events of verification, sent inside the transaction that records them.

Receivers (the orchestrating app) run in that same transaction, so a recorded result and its
consequences commit together or not at all. Every signal carries `run_id`, `subject` and `kind`.
"""

from django.dispatch import Signal

# A run reached a final state: status, decision, payout_fraction_bps, tier, speedup_estimate.
verification_finished = Signal()
# A host started the run (sent once per dispatch that starts it).
verification_started = Signal()
# A running run reported progress: `progress` (the run's progress fields). Throttled per run by
# VERIFICATION_PROGRESS_EVENT_SECONDS, so receivers may do real work.
verification_progressed = Signal()
