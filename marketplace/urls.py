from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from common import converters  # noqa: F401 - registers the path converters before any app's routes load
from common.health import SpeedproofHealthView, liveness
from common.views import api_root, site_index

api_v1 = [
    path("", api_root, name="api-root"),
    path("", include("accounts.urls")),
    path("", include("jobs.urls")),
    path("payments/", include("payments.urls")),
    path("verification/", include("verification.urls")),
    path("webhooks/", include("notifications.urls")),
    path("", include("notifications.preference_urls")),
]

urlpatterns = [
    path("", site_index, name="site-index"),
    path("admin/", admin.site.urls),
    path("health/", SpeedproofHealthView.as_view(), name="health"),
    path("health/live/", liveness, name="health-live"),
    path("health/ready/", SpeedproofHealthView.as_view(), name="health-ready"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Both pages load their scripts from this service's static files (drf-spectacular-sidecar); Swagger UI's start-up
    # script is a separate same-origin file (`?script`) rather than an inline one, so the pages need no CDN and no
    # 'unsafe-inline' script policy.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api_docs/redoc.html"),
        name="redoc",
    ),
    path("api/v1/", include(api_v1)),
    path("api-auth/", include("rest_framework.urls")),
    path("payments/", include("payments.page_urls")),
    path("internal/verification/", include("verification.internal_urls")),
]

# JSON in the API's error shape under /api/ and /internal/, Django's pages elsewhere.
handler400 = "common.error_views.bad_request"
handler403 = "common.error_views.permission_denied"
handler404 = "common.error_views.page_not_found"
handler500 = "common.error_views.server_error"
