"""API plumbing shared by every app: the one error shape and Idempotency-Key handling."""

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import IntegrityError, transaction
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError
from .models import IdempotencyRecord
from .parsers import JsonTooDeepError, PayloadTooLarge

# Subclasses before their bases: the first match names the code.
DRF_CODES = {
    JsonTooDeepError: "json_too_deep",
    PayloadTooLarge: "payload_too_large",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.Throttled: "throttled",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.NotAcceptable: "not_acceptable",
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten_detail(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten_detail(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten_detail(item) for item in detail]
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        exc = PayloadTooLarge()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("validation_failed", "The request has invalid fields.", _flatten_detail(detail))
        return response
    code = next((value for cls, value in DRF_CODES.items() if isinstance(exc, cls)), "error")
    message = str(getattr(exc, "detail", "")) or "Request failed."
    response.data = error_body(code, message)
    return response


def _request_fingerprint(request) -> str:
    digest = hashlib.sha256()
    data = request.data
    if hasattr(data, "lists"):
        plain = {key: values for key, values in data.lists() if not hasattr(values[0], "read")}
    else:
        plain = data
    digest.update(json.dumps(plain, sort_keys=True, default=str).encode())
    for name in sorted(getattr(request, "FILES", {}) or {}):
        upload = request.FILES[name]
        for chunk in upload.chunks():
            digest.update(chunk)
        upload.seek(0)
    return digest.hexdigest()


def idempotent_response(request, handler: Callable[[], Response], secret_fields: tuple[str, ...] = ()) -> Response:
    """Run a creating handler once per (user, Idempotency-Key, endpoint) and replay its stored answer.

    The same key with a different body is a client bug, answered 422 rather than silently creating
    a second object or returning the first one's answer. ``secret_fields`` of the answer are shown
    once and never stored: a replay of such an answer is a 409 naming the object that was created.
    """
    key = request.headers.get("Idempotency-Key")
    if not key or not request.user.is_authenticated:
        return handler()
    if len(key) > 255:
        return Response(error_body("idempotency_key_invalid", "Idempotency-Key is too long."), status=400)
    fingerprint = _request_fingerprint(request)
    endpoint = request.path
    try:
        with transaction.atomic():
            record, created = IdempotencyRecord.objects.get_or_create(
                user=request.user, key=key, endpoint=endpoint, defaults={"request_fingerprint": fingerprint}
            )
    except IntegrityError:
        record, created = IdempotencyRecord.objects.get(user=request.user, key=key, endpoint=endpoint), False
    if not created:
        if record.request_fingerprint != fingerprint:
            return Response(
                error_body("idempotency_key_reused", "This Idempotency-Key was already used with a different request."),
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        if record.response_status is None:
            return Response(
                error_body("idempotency_request_in_progress", "A request with this key is still in progress."),
                status=status.HTTP_409_CONFLICT,
            )
        if secret_fields and record.response_status < 300:
            return Response(
                error_body(
                    "idempotency_secret_not_replayable",
                    "The request with this key already created the object; its secret is shown only once. "
                    "Revoke it and create another if the secret was lost.",
                    {"id": record.response_body.get("id")},
                ),
                status=status.HTTP_409_CONFLICT,
            )
        replay = Response(record.response_body, status=record.response_status)
        replay["Idempotent-Replayed"] = "true"
        return replay
    try:
        response = handler()
    except Exception:
        # Nothing was created: let the client retry the same key.
        record.delete()
        raise
    if response.status_code >= 500:
        record.delete()
    else:
        record.response_status = response.status_code
        body = json.loads(json.dumps(response.data, default=str))
        if isinstance(body, dict):
            body = {name: value for name, value in body.items() if name not in secret_fields}
        record.response_body = body
        record.save(update_fields=["response_status", "response_body"])
    return response


class IdempotentCreateMixin:
    """`create` honours the Idempotency-Key header; views implement `create_response`."""

    # Fields of the creating answer that are shown once and never stored for a replay.
    idempotency_secret_fields: tuple[str, ...] = ()

    def create_response(self, request, *args, **kwargs) -> Response:
        raise NotImplementedError

    def create(self, request, *args, **kwargs):
        return idempotent_response(
            request,
            lambda: self.create_response(request, *args, **kwargs),
            secret_fields=self.idempotency_secret_fields,
        )
