"""Django's last-resort error pages: the API's JSON error shape under /api/ and /internal/, HTML elsewhere.

DRF answers errors raised inside its views; these cover everything else there: unknown paths, bodies
refused before a view runs (Django's size caps), and unhandled exceptions. A 500 never carries the
exception's text or a traceback.
"""

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from .api import error_body

JSON_PATH_PREFIXES = ("/api/", "/internal/")
TOO_LARGE = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(JSON_PATH_PREFIXES)


def payload_too_large_response() -> JsonResponse:
    return JsonResponse(
        error_body("payload_too_large", "The request body is larger than this endpoint accepts."), status=413
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not wants_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, TOO_LARGE):
        return payload_too_large_response()
    return JsonResponse(error_body("bad_request", "The request could not be understood."), status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not wants_json(request):
        return defaults.permission_denied(request, exception)
    return JsonResponse(error_body("permission_denied", "You do not have permission to do this."), status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not wants_json(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if not wants_json(request):
        return defaults.server_error(request)
    return JsonResponse(error_body("server_error", "The server failed to answer this request."), status=500)
