from rest_framework import serializers

from common.converters import MAX_DATABASE_ID

from .event_types import ALL_EVENTS, EVENT_TYPES
from .models import Delivery, DeliveryAttempt, EmailCategory, NotificationPreference, WebhookEndpoint
from .services import MAX_EVENT_TYPES

EVENT_TYPE_CHOICES = [ALL_EVENTS, *EVENT_TYPES]


class EndpointSerializer(serializers.ModelSerializer):
    """An endpoint as its owner sees it: never its signing secret."""

    owner = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES))

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "owner",
            "url",
            "description",
            "event_types",
            "status",
            "disabled_at",
            "disabled_reason",
            "failing_since",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]

    def get_owner(self, endpoint: WebhookEndpoint) -> dict:
        if endpoint.user_id is not None:
            return {"type": "user", "id": endpoint.user_id}
        return {"type": "organization", "id": endpoint.organization_id}

    def get_status(self, endpoint: WebhookEndpoint) -> str:
        return "enabled" if endpoint.enabled else "disabled"


class EndpointWithSecretSerializer(EndpointSerializer):
    """The answer to creating an endpoint or rotating its secret: the only time the secret is shown."""

    secret = serializers.CharField(help_text="The signing secret (`whsec_…`); shown only in this answer.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]


class EndpointWriteSerializer(serializers.Serializer):
    organization = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_DATABASE_ID,
        help_text="Company endpoints: the organization (defaults to the only one you administer).",
    )
    url = serializers.CharField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES), min_length=1, max_length=MAX_EVENT_TYPES
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class EndpointUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(required=False, max_length=2000)
    event_types = serializers.ListField(
        required=False,
        child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES),
        min_length=1,
        max_length=MAX_EVENT_TYPES,
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=500)
    enabled = serializers.BooleanField(required=False, help_text="true turns a disabled endpoint back on.")


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "started_at", "status_code", "latency_ms", "response_excerpt", "error", "succeeded"]


class DeliverySerializer(serializers.ModelSerializer):
    event = serializers.SerializerMethodField()
    last_attempt = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "endpoint",
            "event",
            "status",
            "attempt_count",
            "next_attempt_at",
            "retry_until",
            "delivered_at",
            "created_at",
            "last_attempt",
        ]

    def get_event(self, delivery: Delivery) -> dict:
        event = delivery.event
        return {"id": event.public_id, "type": event.type, "created": event.created_at}

    def get_last_attempt(self, delivery: Delivery) -> dict | None:
        attempt = delivery.attempts.order_by("-number").first()
        return DeliveryAttemptSerializer(attempt).data if attempt else None


class DeliveryDetailSerializer(DeliverySerializer):
    """One delivery with every attempt and the event's payload data."""

    attempts = serializers.SerializerMethodField()
    data = serializers.SerializerMethodField()

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "attempts", "data"]

    def get_attempts(self, delivery: Delivery) -> list[dict]:
        return DeliveryAttemptSerializer(delivery.attempts.order_by("number"), many=True).data

    def get_data(self, delivery: Delivery) -> dict:
        return delivery.event.data


class NotificationPreferenceSerializer(serializers.ModelSerializer):
    """Email categories a user receives (all on until switched off)."""

    class Meta:
        model = NotificationPreference
        fields = list(EmailCategory.values)


class NotificationPreferenceUpdateSerializer(NotificationPreferenceSerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)
