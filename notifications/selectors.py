from django.db.models import Q, QuerySet

from accounts.models import Membership, User
from accounts.selectors import user_is_org_admin
from common.errors import NotFound

from .models import Delivery, DeliveryAttempt, WebhookEndpoint


def endpoint_list_for(*, user: User) -> QuerySet[WebhookEndpoint]:
    """The endpoints `user` manages: their own, and those of organizations they own or administer."""
    administered = Membership.objects.filter(user=user, role__in=Membership.ADMIN_ROLES).values("organization_id")
    return WebhookEndpoint.objects.filter(Q(user=user) | Q(organization_id__in=administered)).order_by("-id")


def endpoint_get_for(*, user: User, endpoint_id: int) -> WebhookEndpoint:
    endpoint = endpoint_list_for(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint.", code="webhook_endpoint_not_found")
    return endpoint


def endpoint_manageable_by(*, user: User, endpoint: WebhookEndpoint) -> bool:
    if endpoint.user_id is not None:
        return endpoint.user_id == user.pk
    return user_is_org_admin(user=user, organization_id=endpoint.organization_id)


def endpoints_subscribed(*, organization_id: int | None, user_id: int | None, event_type: str) -> list[WebhookEndpoint]:
    """Enabled endpoints of this recipient that want this event (filtered here: SQLite has no JSON containment)."""
    endpoints = WebhookEndpoint.objects.filter(enabled=True, organization_id=organization_id, user_id=user_id)
    return [endpoint for endpoint in endpoints if {"*", event_type} & set(endpoint.event_types)]


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[Delivery]:
    return endpoint.deliveries.select_related("event").order_by("-id")


def delivery_get_for(*, user: User, delivery_id: int) -> Delivery:
    delivery = (
        Delivery.objects.select_related("event", "endpoint")
        .filter(pk=delivery_id, endpoint__in=endpoint_list_for(user=user))
        .first()
    )
    if delivery is None:
        raise NotFound("No such delivery.", code="webhook_delivery_not_found")
    return delivery


def delivery_attempts(*, delivery: Delivery) -> QuerySet[DeliveryAttempt]:
    return delivery.attempts.order_by("number")


def deliveries_failing() -> QuerySet[Delivery]:
    """Deliveries an operator should look at: given up, or retrying after a failed attempt."""
    retrying = Q(status=Delivery.Status.PENDING, attempt_count__gt=0)
    return Delivery.objects.filter(Q(status=Delivery.Status.FAILED) | retrying)
