"""Structured logging: JSON lines in production, readable key=value lines locally.

Tracebacks are rendered as plain text (never with frame locals, which hold run tokens and request bodies),
and every record passes through the redaction below, whichever handler writes it.
"""

import logging
import re
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets or hidden data wherever they appear in an event or a message.
SENSITIVE_KEY = re.compile(
    r"(?i)(hidden_input|token|secret|password|passwd|signature|authorization|api_key|apikey|cookie|sessionid)"
)
_SECRET_KEY_NAMES = (
    r"hidden_inputs?|[\w-]*token|[\w-]*secret|password|passwd|[\w-]*signature|authorization|api_key|apikey"
)
SECRET_PATTERNS = [
    # `Authorization: Bearer spk_…`, `RunToken vrt_…` and the like, in headers, reprs and messages.
    re.compile(r"(?i)\b(Bearer|RunToken)\s+[A-Za-z0-9._~+/=-]{6,}"),
    # Our API tokens and run tokens, Stripe secret/restricted keys and webhook secrets.
    re.compile(r"\b(spk|vrt)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\b(sk|rk)_(live|test)_[A-Za-z0-9]{6,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),
    # Stripe-Signature `t=…,v1=<hex>` and any other long hex signature after `v0=`/`v1=`.
    re.compile(r"\bv[01]=[0-9a-fA-F]{16,}"),
    # key=value / "key": value pairs whose key names a secret: the value goes, the key stays.
    re.compile(
        rf"""(?ix)(?P<key>["']?\b(?:{_SECRET_KEY_NAMES})["']?\s*[:=]\s*)"""
        r"""(?P<value>\[REDACTED\]|b?"(?:[^"\\]|\\.)*"|b?'(?:[^'\\]|\\.)*'|[^\s,;}\])]+)"""
    ),
]


def _mask(match: re.Match) -> str:
    key = match.groupdict().get("key")
    return f"{key}{REDACTED}" if key is not None else REDACTED


def redact_text(text: str) -> str:
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and SENSITIVE_KEY.search(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [redact_value(item) for item in value]
    return value


def redact_event(_logger: Any, _method: str, event_dict: dict) -> dict:
    """Structlog processor: masks secret-named keys and secret-looking text (the rendered traceback too)."""
    redacted = {}
    for key, value in event_dict.items():
        if key not in ("event", "exception") and SENSITIVE_KEY.search(key):
            redacted[key] = REDACTED
        else:
            redacted[key] = redact_value(value)
    return redacted


class RedactingFilter(logging.Filter):
    """On every handler: the message is redacted before any formatter sees it, so a handler with a plain
    formatter (or none) cannot write a secret either."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Mapping):  # a structlog event waiting for ProcessorFormatter
            record.msg = redact_value(record.msg)
        else:
            record.msg = redact_text(record.getMessage())
            record.args = None
        return True


SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso"),
]


def build_logging(*, json: bool, level: str) -> dict:
    # The traceback becomes text in the event (format_exc_info, no locals) before redaction, so the JSON line
    # carries it and the redaction reaches the exception's message; the console renders that same text.
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact_event,
                    renderer,
                ],
                "foreign_pre_chain": SHARED_PROCESSORS,
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured", "filters": ["redact"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Django's own default sends errors to its `mail_admins` handler too, with a full request report;
            # everything goes through the redacting console handler instead.
            "django": {"handlers": [], "level": level, "propagate": True},
        },
    }
