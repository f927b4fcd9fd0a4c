"""Every JSON the platform reads from a client goes through `json_loads_bounded`.

Nesting is capped at MAX_JSON_DEPTH levels of arrays and objects: no request of ours needs more, and
deeper documents make Python's recursive JSON, logging and signing code raise RecursionError. A body
over DATA_UPLOAD_MAX_MEMORY_SIZE is refused before it is read in full (DRF's stock parser reads the
stream without Django's size check).
"""

import json
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, serializers

MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_loads_bounded(text: str | bytes) -> Any:
    """`json.loads` without NaN/Infinity and with at most MAX_JSON_DEPTH levels; ValueError otherwise."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as error:
        raise JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from error
    if isinstance(value, (dict, list)) and json_depth_exceeds(value):
        raise JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


class JsonTooDeepError(exceptions.ParseError):
    default_detail = f"JSON may nest arrays and objects at most {MAX_JSON_DEPTH} levels deep."
    default_code = "json_too_deep"


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is larger than this endpoint accepts."
    default_code = "payload_too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the size cap and the depth limit (the default parser of every API view)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge()
        try:
            return json_loads_bounded(raw.decode(encoding))
        except JsonTooDeep as error:
            raise JsonTooDeepError() from error
        except ValueError as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from error


class BoundedJSONField(serializers.JSONField):
    """A JSON field whose form-encoded (string) values are parsed with the same limits as JSON bodies."""

    def to_internal_value(self, data):
        if isinstance(data, (str, bytes)) and (self.binary or getattr(data, "is_json_string", False)):
            try:
                data = json_loads_bounded(data)
            except JsonTooDeep as error:
                raise JsonTooDeepError() from error
            except ValueError:
                self.fail("invalid")
            return data
        if isinstance(data, (dict, list)) and json_depth_exceeds(data):
            raise JsonTooDeepError()
        return super().to_internal_value(data)
