"""Payments API: escrow summary, engineer onboarding, the offline provider's confirm action."""

from dataclasses import asdict

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services


class LedgerLineSerializer(serializers.Serializer):
    transaction_id = serializers.IntegerField()
    kind = serializers.CharField()
    idempotency_key = serializers.CharField()
    account = serializers.CharField()
    amount = serializers.IntegerField(help_text="Minor units; positive = debit, negative = credit.")
    provider_object_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class EscrowSummarySerializer(serializers.Serializer):
    """Money held by the platform for one contract, in integer minor units."""

    id = serializers.IntegerField()
    reference = serializers.CharField()
    state = serializers.CharField()
    currency = serializers.CharField()
    amount = serializers.IntegerField(help_text="Engineer amount.")
    fee = serializers.IntegerField(help_text="Platform fee on the full amount.")
    funded = serializers.IntegerField()
    released = serializers.IntegerField()
    paid = serializers.IntegerField(help_text="Released and already transferred to the engineer (net of reversals).")
    reversed_from_engineer = serializers.IntegerField(
        help_text="Transferred to the engineer and taken back by transfer reversals (e.g. a chargeback lost after"
        " payout, under the platform's lost-dispute policy)."
    )
    refunded = serializers.IntegerField(help_text="Refunds plus chargebacks returned to the company.")
    fee_kept = serializers.IntegerField()
    held = serializers.IntegerField()
    dispute_loss = serializers.IntegerField()
    processing_fee_withheld = serializers.IntegerField(
        help_text="Stripe's processing fee kept back from the refund (REFUND_FEE_POLICY=company_bears); 0 otherwise."
    )
    frozen = serializers.BooleanField(help_text="A chargeback is open: nothing can be released or refunded.")
    frozen_reason = serializers.CharField()
    operator_frozen = serializers.BooleanField(help_text="An operator holds the escrow: nothing moves until released.")
    funding_deadline = serializers.DateTimeField()
    funding_failure_reason = serializers.CharField()
    released_bps = serializers.IntegerField()
    open_issues = serializers.IntegerField(help_text="Open reconciliation issues.")
    ledger_lines = LedgerLineSerializer(many=True)


class OnboardingStatusSerializer(serializers.Serializer):
    account_id = serializers.CharField(allow_null=True)
    onboarding_url = serializers.CharField(
        allow_null=True, help_text="Fresh, single-use hosted-onboarding link while information is owed; do not store."
    )
    link_purpose = serializers.ChoiceField(choices=["onboarding", "update"], allow_null=True)
    dashboard_url = serializers.CharField(allow_null=True, help_text="Single-use Express Dashboard login link.")
    status = serializers.ChoiceField(choices=["connected", "disconnected"], allow_null=True)
    status_reason = serializers.CharField()
    country = serializers.CharField()
    service_agreement = serializers.CharField(help_text="full, or recipient for a cross-border account.")
    transfers_active = serializers.BooleanField()
    details_submitted = serializers.BooleanField()
    requirements_due = serializers.ListField(child=serializers.CharField())
    payout_failure = serializers.DictField(allow_null=True, help_text="The latest failed payout to your bank.")


class OnboardingStartSerializer(serializers.Serializer):
    country = serializers.CharField(
        required=False,
        max_length=2,
        help_text="ISO 3166-1 alpha-2; required for a new payout account unless the engineer profile has one.",
    )


class EscrowSummaryApi(APIView):
    """Funded, released, refunded, fee kept, held, state, frozen flag and ledger lines of one escrow."""

    @extend_schema(responses=EscrowSummarySerializer)
    def get(self, request, escrow_id: int):
        escrow = selectors.escrow_get_for_user(user=request.user, escrow_id=escrow_id)
        return Response(asdict(selectors.escrow_summary(escrow.pk)))


class OnboardingApi(APIView):
    """An engineer's payout account. POST starts or resumes onboarding and answers fresh links at any time (an
    onboarding link while information is owed, a dashboard link once onboarded); GET reports the status only."""

    @extend_schema(request=OnboardingStartSerializer, responses=OnboardingStatusSerializer)
    def post(self, request):
        serializer = OnboardingStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        status = services.engineer_onboarding_start(user=request.user, country=serializer.validated_data.get("country"))
        return Response(asdict(status), status=200)

    @extend_schema(responses=OnboardingStatusSerializer)
    def get(self, request):
        return Response(asdict(services.engineer_onboarding_refresh(user=request.user)))


class OfflineConfirmSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=list(services.OFFLINE_OUTCOMES))


class OfflinePaymentConfirmApi(APIView):
    """Offline provider only: play the payer's side of a payment (staff or the paying organization's admins)."""

    @extend_schema(
        request=OfflineConfirmSerializer,
        responses=inline_serializer(
            "OfflineConfirmed",
            {
                "escrow_id": serializers.IntegerField(),
                "payment_intent_id": serializers.CharField(),
                "outcome": serializers.CharField(),
            },
        ),
    )
    def post(self, request, payment_intent_id: str):
        serializer = OfflineConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        escrow = services.offline_payment_confirm(
            payment_intent_id=payment_intent_id, outcome=serializer.validated_data["outcome"], actor=request.user
        )
        return Response(
            {
                "escrow_id": escrow.pk,
                "payment_intent_id": payment_intent_id,
                "outcome": serializer.validated_data["outcome"],
            }
        )
