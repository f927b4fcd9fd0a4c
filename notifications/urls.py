from common.routers import IdRouter

from .apis import WebhookDeliveryViewSet, WebhookEndpointViewSet

router = IdRouter()
router.register("endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("deliveries", WebhookDeliveryViewSet, basename="webhook-delivery")
urlpatterns = router.urls
