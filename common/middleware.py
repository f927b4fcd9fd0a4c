"""Content-Security-Policy for the HTML the service serves (Django 5.2 has no built-in CSP).

The admin, the browsable API and the offline payment pages load scripts only from this origin (the admin's
and DRF's inline <script> blocks are JSON data, which a CSP does not block) and use inline styles. The API docs
(Swagger UI at /api/docs/, ReDoc at /api/redoc/) load their bundles from this origin too (drf-spectacular-sidecar)
and Swagger UI's start-up script is a same-origin file, so they get the same policy plus one thing: ReDoc runs its
search index in a Web Worker it builds from a blob: URL. JSON responses carry no policy: a browser never renders
them as a page.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from .api import error_body
from .error_views import bad_request, page_not_found, payload_too_large_response, server_error, wants_json

PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
DOCS_POLICY = PAGE_POLICY + "; worker-src 'self' blob:"
DOCS_PATHS = ("/api/docs/", "/api/redoc/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if content_type.startswith("text/html") and "Content-Security-Policy" not in response:
            policy = DOCS_POLICY if request.path.startswith(DOCS_PATHS) else PAGE_POLICY
            response["Content-Security-Policy"] = policy
        return response


class JsonErrorPagesMiddleware:
    """Under /api/ and /internal/, an HTML error page becomes the API's JSON error shape, with no details.

    Django's error handlers already answer JSON there (common.error_views), but with DEBUG on (the `make run`
    default) Django renders its technical 404/500 pages instead of calling them, and those show settings,
    request bodies and frame locals (tokens among them). Placed outside CommonMiddleware, so a missing slash is
    still redirected first.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or not response.get("Content-Type", "").startswith("text/html"):
            return response
        if not wants_json(request):
            return response
        if response.status_code == 404:
            return page_not_found(request)
        if response.status_code >= 500:
            return server_error(request)
        if response.status_code in (400, 413):
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            if response.status_code == 413 or declared > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                return payload_too_large_response()
            return bad_request(request)
        return JsonResponse(error_body("request_refused", "The request was refused."), status=response.status_code)
