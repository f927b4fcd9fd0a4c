"""The one domain error family. Services raise these; the API layer turns them into the one error shape."""

from typing import Any


class DomainError(Exception):
    """A business rule refused the request; `code` is machine-readable and stable."""

    status_code = 400
    default_code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields or {}


class ValidationFailed(DomainError):
    default_code = "validation_failed"


class IllegalTransition(DomainError):
    status_code = 409
    default_code = "illegal_transition"


class Conflict(DomainError):
    status_code = 409
    default_code = "conflict"


class NotPermitted(DomainError):
    status_code = 403
    default_code = "permission_denied"


class NotFound(DomainError):
    status_code = 404
    default_code = "not_found"


class RetryableError(DomainError):
    """An outside dependency failed in a way that may succeed if tried again."""

    status_code = 503
    default_code = "temporarily_unavailable"
