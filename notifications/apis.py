from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import IdempotentCreateMixin

from . import emails, selectors, services
from .models import Delivery, WebhookEndpoint
from .serializers import (
    DeliveryDetailSerializer,
    DeliverySerializer,
    EndpointSerializer,
    EndpointUpdateSerializer,
    EndpointWithSecretSerializer,
    EndpointWriteSerializer,
    NotificationPreferenceSerializer,
    NotificationPreferenceUpdateSerializer,
)


def _with_secret(issued: services.IssuedEndpoint) -> dict:
    return {**EndpointSerializer(issued.endpoint).data, "secret": issued.secret}


class WebhookEndpointViewSet(IdempotentCreateMixin, viewsets.GenericViewSet):
    """Webhook endpoints of the organizations you own or administer, and your own (engineers)."""

    serializer_class = EndpointSerializer
    idempotency_secret_fields = ("secret",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        return selectors.endpoint_list_for(user=self.request.user)

    def _endpoint(self) -> WebhookEndpoint:
        return selectors.endpoint_get_for(user=self.request.user, endpoint_id=int(self.kwargs["pk"]))

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(EndpointSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(EndpointSerializer(self._endpoint()).data)

    @extend_schema(request=EndpointWriteSerializer, responses={201: EndpointWithSecretSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    def create_response(self, request, *args, **kwargs):
        serializer = EndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        issued = services.endpoint_create(actor=request.user, organization_id=data.pop("organization", None), **data)
        return Response(_with_secret(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=EndpointUpdateSerializer, responses=EndpointSerializer)
    def partial_update(self, request, pk=None):
        serializer = EndpointUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(actor=request.user, endpoint=self._endpoint(), **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.endpoint_delete(actor=request.user, endpoint=self._endpoint())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=EndpointWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """A new signing secret, shown once; the previous one keeps signing until `previous_secret_expires_at`."""
        issued = services.endpoint_secret_rotate(actor=request.user, endpoint=self._endpoint())
        return Response(_with_secret(issued))

    @extend_schema(responses=DeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        """The endpoint's delivery log, newest first."""
        page = self.paginate_queryset(selectors.delivery_list(endpoint=self._endpoint()))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class WebhookDeliveryViewSet(viewsets.GenericViewSet):
    serializer_class = DeliveryDetailSerializer

    def get_queryset(self):
        return Delivery.objects.none()

    def _delivery(self) -> Delivery:
        return selectors.delivery_get_for(user=self.request.user, delivery_id=int(self.kwargs["pk"]))

    def retrieve(self, request, pk=None):
        """One delivery with every attempt (status code, latency, truncated response, error)."""
        return Response(DeliveryDetailSerializer(self._delivery()).data)

    @extend_schema(request=None, responses={202: DeliveryDetailSerializer})
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        """Send the event again now; retried with backoff like a first delivery."""
        delivery = services.delivery_redeliver(actor=request.user, delivery=self._delivery())
        return Response(DeliveryDetailSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class NotificationPreferencesApi(APIView):
    """Your email preferences: one switch per category, all on by default."""

    @extend_schema(responses=NotificationPreferenceSerializer)
    def get(self, request):
        preference = emails.notification_preferences_get(user=request.user)
        return Response(NotificationPreferenceSerializer(preference).data)

    @extend_schema(request=NotificationPreferenceUpdateSerializer, responses=NotificationPreferenceSerializer)
    def patch(self, request):
        serializer = NotificationPreferenceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        preference = emails.notification_preferences_update(user=request.user, changes=serializer.validated_data)
        return Response(NotificationPreferenceSerializer(preference).data)
