from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from common.health import SpeedproofHealthView

api_v1 = [
    path("", include("accounts.urls")),
    path("", include("jobs.urls")),
    path("payments/", include("payments.urls")),
    path("verification/", include("verification.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", SpeedproofHealthView.as_view(), name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include(api_v1)),
    path("api-auth/", include("rest_framework.urls")),
    path("payments/", include("payments.page_urls")),
    path("internal/verification/", include("verification.internal_urls")),
]
