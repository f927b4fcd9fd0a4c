"""OpenAPI generation rules that hold for every view, so the schema states what the API really does.

`SpeedproofAutoSchema` (REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]) documents the one error shape for the
statuses an operation can answer, the Idempotency-Key header on creating POSTs, and only the filter and
pagination parameters a view really reads. `schema_enums_postprocess` (a SPECTACULAR_SETTINGS hook) turns
currency and hardware-class strings into enums.
"""

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.filters import OrderingFilter, SearchFilter

from .api import IdempotentCreateMixin
from .money import SUPPORTED_CURRENCIES

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    name="Idempotency-Key",
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Makes the create safe to retry: the same key and body replay the stored answer "
        "(`Idempotent-Replayed: true`); the same key with another body is answered 422."
    ),
)

# Downloads are served with the media type of the stored archive (`.bin` when its format is unknown).
ARCHIVE_DOWNLOAD_RESPONSES = {
    (200, "application/gzip"): OpenApiTypes.BINARY,
    (200, "application/zip"): OpenApiTypes.BINARY,
    (200, "application/octet-stream"): OpenApiTypes.BINARY,
}

ERROR_RESPONSE = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorDetail",
            {
                "code": serializers.CharField(help_text="Stable, machine-readable error code."),
                "message": serializers.CharField(help_text="Human-readable explanation."),
                "fields": serializers.DictField(help_text="Per-field problems, keyed by field name."),
            },
        )
    },
)

UNSAFE_METHODS = frozenset(["POST", "PUT", "PATCH", "DELETE"])


def _nested_over_nullable_relation(field) -> bool:
    """A nested serializer over a nullable foreign key renders null when nothing is attached."""
    if not isinstance(field, serializers.BaseSerializer) or field.allow_null or getattr(field, "many", False):
        return False
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    if model is None or not field.source or "." in field.source:
        return False
    try:
        return bool(model._meta.get_field(field.source).null)
    except FieldDoesNotExist:
        return False


class SpeedproofAutoSchema(AutoSchema):
    def get_description(self) -> str:
        # A view without its own docstring would otherwise inherit a mixin's developer notes.
        action_or_method = getattr(self.view, getattr(self.view, "action", self.method.lower()), None)
        own_view_doc = self.view.__class__.__dict__.get("__doc__") or ""
        return (getattr(action_or_method, "__doc__", None) or own_view_doc).strip()

    def get_filter_backends(self) -> list:
        # Only `list` actions run filter_queryset, and each backend only reads what the view configures.
        if getattr(self.view, "action", "list") != "list" or not self._is_list_view():
            return []
        backends = []
        for backend in getattr(self.view, "filter_backends", []):
            if issubclass(backend, SearchFilter) and not getattr(self.view, "search_fields", None):
                continue
            if issubclass(backend, OrderingFilter) and not getattr(self.view, "ordering_fields", None):
                continue
            backends.append(backend)
        return backends

    def _get_serializer_field_meta(self, field, direction):
        meta = super()._get_serializer_field_meta(field, direction)
        if direction == "response" and _nested_over_nullable_relation(field):
            meta["nullable"] = True
        return meta

    def accepts_idempotency_key(self) -> bool:
        if self.method != "POST":
            return False
        action = getattr(self.view, "action", None)
        if isinstance(self.view, IdempotentCreateMixin) and action == "create":
            return True
        return action in getattr(self.view, "idempotent_actions", ())

    def get_override_parameters(self) -> list:
        return [IDEMPOTENCY_KEY_HEADER] if self.accepts_idempotency_key() else []

    def _error_statuses(self) -> list[str]:
        view = self.view
        authenticates = bool(getattr(view, "authentication_classes", None))
        open_to_all = all(
            issubclass(permission, permissions.AllowAny) for permission in getattr(view, "permission_classes", [])
        )
        has_path_params = "{" in self.path
        paginated = self._is_list_view() and self._get_paginator() is not None
        has_body = self.method in {"POST", "PUT", "PATCH"} and self.get_request_serializer() is not None
        statuses = []
        if self.method in UNSAFE_METHODS or self._get_filter_parameters() or paginated:
            statuses.append("400")
        if authenticates:
            statuses.append("401")
        if not open_to_all or (authenticates and self.method in UNSAFE_METHODS):
            statuses.append("403")  # Business rules, and CSRF for session-authenticated writes.
        if has_path_params or paginated:
            statuses.append("404")  # Unknown or invisible objects; a page past the end.
        if self.method in UNSAFE_METHODS:
            statuses.append("409")  # Illegal transitions and conflicting state (an email already taken).
        if has_body:
            statuses.extend(["413", "415"])
        if self.accepts_idempotency_key():
            statuses.append("422")
        if getattr(view, "throttle_classes", None):
            statuses.append("429")
        # Answers a view gives beyond what its shape implies (e.g. 404 for an unknown token in a request body).
        statuses.extend(code for code in getattr(view, "schema_extra_error_statuses", ()) if code not in statuses)
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status_code in self._error_statuses():
            if status_code not in responses:
                responses[status_code] = self._get_response_for_code(
                    ERROR_RESPONSE, status_code, ["application/json"], direction
                )
        return responses


def _enum_for(name: str) -> list[str] | None:
    if name == "currency":
        return sorted(SUPPORTED_CURRENCIES)
    if name == "hardware_class":
        return list(settings.HARDWARE_CLASSES)
    return None


def _constrain_string(schema: dict, name: str) -> None:
    values = _enum_for(name)
    if values and schema.get("type") == "string" and "enum" not in schema:
        schema.pop("maxLength", None)
        schema.pop("minLength", None)
        schema["enum"] = values


def schema_enums_postprocess(result, generator, request, public):
    """Currency (common.money) and hardware class (settings.HARDWARE_CLASSES) are closed lists."""
    for component in result.get("components", {}).get("schemas", {}).values():
        for name, prop in component.get("properties", {}).items():
            _constrain_string(prop, name)
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                _constrain_string(parameter.get("schema", {}), parameter["name"])
    return result
