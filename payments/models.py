"""Escrows, the provider operations they cause, an append-only double-entry ledger and stored webhook events.

Money is always an integer number of minor units. The escrow references what it pays for only by a string
(`reference`, e.g. "contract:42"): payments never imports jobs.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import Organization
from common.models import TimeStampedModel


class Escrow(TimeStampedModel):
    class Status(models.TextChoices):
        PENDING_FUNDING = "pending_funding", "Awaiting funding"
        FUNDED = "funded", "Funded, held by the platform"
        PARTIALLY_RELEASED = "partially_released", "Partially released"
        RELEASED = "released", "Released"
        REFUNDED = "refunded", "Refunded"
        CLOSED = "closed", "Closed (part released, remainder refunded)"
        CANCELLED = "cancelled", "Cancelled before funding"

    reference = models.CharField(max_length=64, unique=True)
    payer_organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="escrows")
    payee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="escrows_payee")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Engineer amount, minor units.")
    fee = models.BigIntegerField(help_text="Platform fee on the full amount, minor units.")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PENDING_FUNDING, db_index=True)
    funding_deadline = models.DateTimeField()
    funding_attempt = models.PositiveIntegerField(default=1)
    payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # The hosted Checkout page offered with the PaymentIntent; Stripe creates the page's own intent on payment.
    checkout_session_id = models.CharField(max_length=255, blank=True, db_index=True)
    charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    funding_failure_reason = models.CharField(max_length=500, blank=True)
    # Cumulative release decisions, written under the row lock together with the ledger allocation.
    released_bps = models.PositiveIntegerField(default=0)
    released_amount = models.BigIntegerField(default=0)
    released_fee = models.BigIntegerField(default=0)
    frozen = models.BooleanField(default=False, db_index=True)
    frozen_reason = models.CharField(max_length=255, blank=True)
    dispute_id = models.CharField(max_length=255, blank=True, db_index=True)
    # An operator's hold, kept apart from the chargeback freeze above: lifting one never lifts the other.
    operator_frozen = models.BooleanField(default=False, db_index=True)
    operator_frozen_reason = models.CharField(max_length=255, blank=True)
    status_reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0) & Q(fee__gte=0), name="escrow_money_positive"),
            models.CheckConstraint(condition=Q(released_bps__lte=10_000), name="escrow_released_bps_range"),
            models.CheckConstraint(
                condition=Q(released_amount__lte=models.F("amount")) & Q(released_fee__lte=models.F("fee")),
                name="escrow_release_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"Escrow {self.pk} ({self.reference}, {self.status})"

    @property
    def total(self) -> int:
        return self.amount + self.fee

    @property
    def on_hold(self) -> bool:
        """Nothing is released, refunded or transferred while a chargeback is open or an operator holds it."""
        return self.frozen or self.operator_frozen


class PaymentCustomer(TimeStampedModel):
    """The paying organization's customer at the provider, created once (idempotency key per organization)."""

    organization = models.OneToOneField(Organization, on_delete=models.PROTECT, related_name="payment_customer")
    provider_customer_id = models.CharField(max_length=255, unique=True)
    email = models.EmailField(blank=True)

    def __str__(self) -> str:
        return f"{self.provider_customer_id} ({self.organization})"


class ConnectedAccount(TimeStampedModel):
    """An engineer's payout account at the provider (Stripe Connect Express-style, platform bears losses).

    `disconnected`: the account deauthorized the platform; nothing is transferred to it (releases wait as
    `awaiting_payee` with the reason) until the engineer onboards again, which connects a new provider account.
    """

    class Status(models.TextChoices):
        CONNECTED = "connected", "Connected"
        DISCONNECTED = "disconnected", "Disconnected from the platform"

    class ServiceAgreement(models.TextChoices):
        FULL = "full", "Full"
        RECIPIENT = "recipient", "Recipient (cross-border payouts)"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="connected_account")
    provider_account_id = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CONNECTED)
    status_reason = models.CharField(max_length=255, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, as the account was created.")
    service_agreement = models.CharField(max_length=16, choices=ServiceAgreement.choices, blank=True)
    connections = models.PositiveIntegerField(default=1, help_text="Provider accounts made for this engineer so far.")
    transfers_active = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    requirements_due = models.JSONField(default=list, blank=True)
    last_payout_failure = models.JSONField(
        default=dict, blank=True, help_text="The latest failed payout to the engineer's bank: id, code, message."
    )
    last_payout_paid = models.JSONField(
        default=dict, blank=True, help_text="The latest payout that reached the engineer's bank: id, amount, currency."
    )

    @property
    def payable(self) -> bool:
        return self.status == self.Status.CONNECTED and self.transfers_active

    def __str__(self) -> str:
        return f"{self.provider_account_id} ({self.user})"


class ProviderOperation(TimeStampedModel):
    """A money movement we intend to make at the provider: marked (and committed) before the network call.

    The idempotency key is deterministic (`fund:`, `release:{escrow}:{bps}`, `refund:{escrow}`), so a call that
    is repeated after a crash or a timeout can never move the money twice.
    """

    class Kind(models.TextChoices):
        TRANSFER = "transfer", "Transfer to engineer"
        REFUND = "refund", "Refund to company"
        DUPLICATE_REFUND = "duplicate_refund", "Refund of a second payment for the same escrow"
        REVERSAL = "reversal", "Reversal of a transfer to the engineer (lost chargeback)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        AWAITING_PAYEE = "awaiting_payee", "Waiting for the engineer's payout account"
        SUCCEEDED = "succeeded", "Succeeded"
        BLOCKED = "blocked", "Blocked: needs an operator"
        SUPERSEDED = "superseded", "Replaced by an operator's retry"

    escrow = models.ForeignKey(Escrow, on_delete=models.PROTECT, related_name="operations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=128, unique=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    provider_object_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    reason = models.CharField(max_length=255, blank=True)
    verification_run_id = models.CharField(max_length=128, blank=True)
    # Set for a duplicate refund: the second PaymentIntent that paid an already funded escrow.
    payment_intent_id = models.CharField(max_length=255, blank=True)
    # Set for a reversal: the transfer (provider id) it takes money back from.
    reversed_transfer_id = models.CharField(max_length=255, blank=True)
    # Set for an operator's retry: the operation it replaces (itself blocked, then superseded).
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="retries")

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="operation_amount_positive")]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key} ({self.status})"


class LedgerAccount(models.TextChoices):
    COMPANY_FUNDING = "company_funding", "Company funding (external)"
    HELD = "held", "Held funds"
    ENGINEER_PAYABLE = "engineer_payable", "Engineer payable"
    ENGINEER_PAID = "engineer_paid", "Engineer paid"
    PLATFORM_FEE = "platform_fee", "Platform fee revenue"
    REFUNDS = "refunds", "Refunded to company"
    CHARGEBACKS = "chargebacks", "Returned to company by chargeback"
    DISPUTE_LOSS = "dispute_loss", "Dispute losses (platform)"
    PLATFORM_CASH = "platform_cash", "Platform funds (external)"
    # Stripe's fees on the escrow's charges, refunds, transfers and disputes: a platform expense paid from
    # platform_cash, booked in the balance transaction's currency (see payments/README.md, "Fees").
    STRIPE_FEES = "stripe_fees", "Stripe fees (platform expense)"
    # The processing fee kept back from a refund under REFUND_FEE_POLICY=company_bears: held money the company
    # does not get back, which pays for the Stripe fee the platform already booked.
    STRIPE_FEES_RECOVERED = "stripe_fees_recovered", "Processing fee withheld from a refund"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise RuntimeError("The ledger is append-only.")

    def delete(self):
        raise RuntimeError("The ledger is append-only.")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise RuntimeError("The ledger is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RuntimeError("The ledger is append-only.")


class LedgerTransaction(AppendOnlyModel):
    """One balanced money movement. Its idempotency key is unique: the backstop against booking twice.

    Without an escrow: a platform-level movement that belongs to no contract (Stripe's Connect fees, billed monthly).
    """

    escrow = models.ForeignKey(
        Escrow, on_delete=models.PROTECT, related_name="ledger_transactions", null=True, blank=True
    )
    idempotency_key = models.CharField(max_length=160, unique=True)
    kind = models.CharField(max_length=32)
    currency = models.CharField(max_length=3)
    provider_object_id = models.CharField(max_length=255, blank=True, db_index=True)
    provider_ids = models.JSONField(default=dict, blank=True)
    memo = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # The monthly report reads transactions by booking month.
        indexes = [models.Index(fields=["created_at"], name="ledger_txn_created_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class LedgerEntry(AppendOnlyModel):
    """One line of a transaction: positive amounts are debits, negative credits; a transaction sums to zero."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    escrow = models.ForeignKey(Escrow, on_delete=models.PROTECT, related_name="ledger_entries", null=True, blank=True)
    account = models.CharField(max_length=24, choices=LedgerAccount.choices)
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["escrow", "account"])]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="ledger_entry_nonzero")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount}"


class WebhookEvent(models.Model):
    """A provider event, stored once (unique event id) before it is acknowledged, then processed on a queue."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"

    event_id = models.CharField(max_length=255, unique=True)
    source = models.CharField(max_length=16, default="account")
    type = models.CharField(max_length=100, db_index=True)
    livemode = models.BooleanField(default=False)
    account = models.CharField(max_length=255, blank=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.status})"


class ReconciliationIssue(TimeStampedModel):
    """A difference between the provider's records and our ledger, for an operator to look at."""

    escrow = models.ForeignKey(Escrow, on_delete=models.PROTECT, related_name="reconciliation_issues")
    kind = models.CharField(max_length=32)
    expected = models.BigIntegerField()
    actual = models.BigIntegerField()
    detail = models.JSONField(default=dict, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["escrow", "kind"], condition=Q(resolved_at__isnull=True), name="one_open_issue_per_kind"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} on escrow {self.escrow_id}: expected {self.expected}, found {self.actual}"


class OfflineObject(models.Model):
    """The offline provider's store: Stripe-shaped objects kept in our own database (no network)."""

    object_id = models.CharField(max_length=255, unique=True)
    object_type = models.CharField(max_length=64, db_index=True)
    data = models.JSONField()
    group = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.object_id


class OfflineIdempotencyKey(models.Model):
    key = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=64)
    object_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class PaymentsInstallation(models.Model):
    """One row per database: a random id, made at first use, that namespaces the keys we send to Stripe."""

    singleton = models.PositiveSmallIntegerField(primary_key=True, default=1)
    installation_id = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.installation_id
