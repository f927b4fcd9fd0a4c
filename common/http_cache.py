"""Conditional GETs (ETag / If-None-Match) and a response cache invalidated by version counters.

ETags are strong: they hash the exact body bytes, so two responses share one only when they are byte-identical,
whoever asked. Cached responses are stored under a key that hashes the caller's visibility scope, the current
values of the version counters that scope depends on, and everything else the body depends on (scheme, host,
path with query string, negotiated media type); bumping any of those counters orphans every entry built on it.
Only the JSON renderer's output is cached, only 200s, and authentication, permissions and throttling have run
before a view gets here (the helpers are called from inside DRF handlers).
"""

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.response import Response

VERSION_KEY_PREFIX = "http-cache:version:"
ENTRY_KEY_PREFIX = "http-cache:entry:"
# The representation depends on who asks: shared caches must not reuse it across credentials.
VIEWER_HEADERS = ("Authorization", "Cookie")


def etag_for(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _viewer_dependent(response: HttpResponse) -> None:
    patch_vary_headers(response, VIEWER_HEADERS)
    # Clients may keep it but must revalidate (cheaply, with If-None-Match) before each use.
    patch_cache_control(response, private=True, no_cache=True)


def _conditional(request: HttpRequest, response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    return get_conditional_response(request, etag=etag, response=response)


def conditional_get(request, response: Response) -> Response:
    """Tag a 200 with its body's ETag once rendered, and answer 304 when the client already holds that body."""
    _viewer_dependent(response)

    def tag(rendered: HttpResponse) -> HttpResponse | None:
        if rendered.status_code != 200 or request.method not in ("GET", "HEAD"):
            return None
        return _conditional(request, rendered, etag_for(rendered.content))

    response.add_post_render_callback(tag)
    return response


def version_counters_get(names: Iterable[str]) -> dict[str, int]:
    names = list(names)
    keys = [VERSION_KEY_PREFIX + name for name in names]
    found = cache.get_many(keys)
    for key in keys:
        if key not in found:
            # A counter that was evicted restarts at the clock, never at a value an orphaned entry was built on.
            cache.add(key, time.time_ns(), timeout=None)
            found[key] = cache.get(key)
    return {name: found[key] for name, key in zip(names, keys, strict=True)}


def _bump(names: Iterable[str]) -> None:
    for name in names:
        key = VERSION_KEY_PREFIX + name
        try:
            cache.incr(key)
        except ValueError:  # missing: starting it anew is already a change
            cache.add(key, time.time_ns(), timeout=None)


def version_counters_bump(names: Iterable[str]) -> None:
    """Bump now and again once the caller's transaction commits.

    The bump on commit is the one that matters: a reader who built an entry from pre-commit rows under the
    first bump's value finds it orphaned by the second. The immediate bump makes the change visible to reads in
    the same transaction (and in tests, whose transactions never commit).
    """
    names = tuple(names)
    _bump(names)
    transaction.on_commit(lambda: _bump(names))


def versioned_get_or_compute(key: str, versions: dict[str, int], compute: Callable[[], Any], timeout: int) -> Any:
    """`compute()`'s value, remembered under `key` and the counter values in `versions` (read with
    `version_counters_get` before anything `compute` reads): a change bumps them on commit and orphans it."""
    full_key = f"{key}:" + ",".join(str(versions[name]) for name in sorted(versions))
    remembered = cache.get(full_key)
    if remembered is None:
        remembered = compute()
        cache.set(full_key, remembered, timeout)
    return remembered


def response_cache_enabled() -> bool:
    return bool(settings.API_RESPONSE_CACHE_SECONDS)


@dataclass(frozen=True)
class CacheScope:
    """Who shares a cached representation (`scope`, no secrets) and the values of the counters it depends on,
    read (`version_counters_get`) before anything the response shows was queried."""

    scope: str
    versions: dict[str, int]


def _entry_key(request, namespace: str, scope: CacheScope) -> str:
    parts = [
        namespace,
        scope.scope,
        sorted(scope.versions.items()),
        request.scheme,
        request.get_host(),
        request.get_full_path(),
        request.accepted_media_type,
    ]
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()
    return f"{ENTRY_KEY_PREFIX}{namespace}:{digest}"


def cached_response(
    request, *, namespace: str, scope: CacheScope | None, build: Callable[[], Response]
) -> HttpResponse:
    """`build()`'s response, served from the cache while none of the scope's version counters moved.

    An entry is stored under the counter values read before `build()` queried its rows, so any change committed
    after that read bumps the counters past it. `build()` must show what the scope sees, not more: an entry is
    served to everyone in the scope. `scope=None` (or the cache switched off) only adds the ETag.
    """
    if (
        scope is None
        or not response_cache_enabled()
        or request.method not in ("GET", "HEAD")
        or getattr(request.accepted_renderer, "format", "") != "json"
    ):
        return conditional_get(request, build())
    key = _entry_key(request, namespace, scope)
    hit = cache.get(key)
    if hit is not None:
        content_type, content, etag = hit
        response = HttpResponse(content, content_type=content_type)
        _viewer_dependent(response)
        return _conditional(request, response, etag)

    response = build()
    timeout = settings.API_RESPONSE_CACHE_SECONDS

    def store(rendered: HttpResponse) -> None:
        if rendered.status_code == 200:
            cache.set(key, (rendered["Content-Type"], rendered.content, etag_for(rendered.content)), timeout)

    # Registered before conditional_get's callback, so the full 200 is stored even when the client gets a 304.
    response.add_post_render_callback(store)
    return conditional_get(request, response)


IF_NONE_MATCH_HEADER = OpenApiParameter(
    name="If-None-Match",
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description="The `ETag` of a response you hold: answered 304 with no body while the representation is unchanged.",
)
NOT_MODIFIED_RESPONSE = OpenApiResponse(
    description="Not modified: the `If-None-Match` ETag is still current (strong ETag of the response body)."
)
