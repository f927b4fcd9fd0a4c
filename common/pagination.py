"""List pagination: page numbers everywhere, and keyset (cursor) pages where a view offers them.

Page numbers need an exact count of everything the viewer may see: views that know the viewer's scope take it
from `scoped_count` (counted once per scope and version), others COUNT on every page. Cursor pages read
`page_size + 1` rows after a signed position in the list's unique key (`-id`), so a page costs the same whatever
the table's size; their `total` is a count cached per visibility scope and version (`scoped_total`) or the
planner's estimate, labelled `exact: false`.
"""

import hashlib
import json
from collections.abc import Callable
from functools import cached_property, partial

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.paginator import Paginator as DjangoPaginator
from django.db import connections
from django.db.models import QuerySet
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import remove_query_param, replace_query_param

from common.errors import ValidationFailed
from common.http_cache import CacheScope, response_cache_enabled

MAX_KEY = 2**63 - 1
CURSOR_MAX_LENGTH = 200
TOTAL_KEY_PREFIX = "pagination:total:"


class StablePageNumberPagination(PageNumberPagination):
    """Page-number pagination; views order by a unique key last so pages never overlap or skip."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters


def estimated_total(queryset: QuerySet) -> tuple[int, bool]:
    """The planner's row estimate for `queryset` (no scan; PostgreSQL), labelled inexact."""
    connection = connections[queryset.db]
    rows = queryset.order_by().values("pk")
    if connection.vendor != "postgresql":
        return rows.count(), True
    plan = json.loads(rows.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"]), False


def scoped_count(
    queryset: QuerySet, *, request, namespace: str, scope: CacheScope | None, ignored_params: tuple[str, ...] = ()
) -> int | None:
    """An exact count cached per visibility scope, its version counters and the query string (less
    `ignored_params`), so walking the pages of one list counts once; None when the cache is off."""
    if scope is None or not response_cache_enabled():
        return None
    params = sorted((k, v) for k, values in request.query_params.lists() if k not in ignored_params for v in values)
    parts = [namespace, scope.scope, sorted(scope.versions.items()), params]
    key = TOTAL_KEY_PREFIX + hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()
    value = cache.get(key)
    if value is None:
        value = queryset.order_by().count()
        cache.set(key, value, settings.API_RESPONSE_CACHE_SECONDS)
    return value


def scoped_total(queryset: QuerySet, **scope) -> tuple[int, bool]:
    """`scoped_count`, or the planner's estimate when the cache is off."""
    counted = scoped_count(queryset, **scope)
    return estimated_total(queryset) if counted is None else (counted, True)


class ScopedCountPaginator(DjangoPaginator):
    """Django's paginator, with the count from `count_for(object_list)` when that answers (not None)."""

    def __init__(self, *args, count_for: Callable[[QuerySet], int | None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.count_for = count_for

    @cached_property
    def count(self) -> int:
        counted = self.count_for(self.object_list) if self.count_for is not None else None
        return DjangoPaginator.count.func(self) if counted is None else counted


class PageOrCursorPagination(StablePageNumberPagination):
    """Page numbers as before; with `cursor` (empty for the first page), keyset pages in the default order.

    Cursor pages are ordered by `-id` only: any other `ordering` is 400 `cursor_ordering_unsupported`. A cursor
    is signed; one that does not verify is 400 `invalid_cursor`. `total_for(queryset)` gives `(value, exact)`.
    """

    cursor_query_param = "cursor"
    cursor_salt = "common.pagination.cursor"
    cursor_orderings = ("", "-id")
    total_for: Callable[[QuerySet], tuple[int, bool]] = staticmethod(estimated_total)
    # Page-number pages take their count from here when it answers (e.g. `scoped_count`), else COUNT(*).
    count_for: Callable[[QuerySet], int | None] | None = None

    cursor_mode = False

    def paginate_queryset(self, queryset, request, view=None):
        self.cursor_mode = self.cursor_query_param in request.query_params
        if not self.cursor_mode:
            self.django_paginator_class = partial(ScopedCountPaginator, count_for=self.count_for)
            return super().paginate_queryset(queryset, request, view)
        self.request = request
        ordering = request.query_params.get(api_settings.ORDERING_PARAM)
        if ordering is not None and ordering.strip() not in self.cursor_orderings:
            raise ValidationFailed(
                "Cursor pages come only in the default order (newest first, `-id`).",
                code="cursor_ordering_unsupported",
                fields={api_settings.ORDERING_PARAM: ["unsupported with cursor"]},
            )
        position = self._decode(request.query_params[self.cursor_query_param])
        size = self.get_page_size(request)
        if position is None:
            rows = queryset.order_by("-pk")
        elif position[1] == "next":
            rows = queryset.filter(pk__lt=position[0]).order_by("-pk")
        else:
            rows = queryset.filter(pk__gt=position[0]).order_by("pk")
        rows = list(rows[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if position is not None and position[1] == "previous":
            rows.reverse()
        first, last = (rows[0].pk, rows[-1].pk) if rows else (None, None)
        backwards = position is not None and position[1] == "previous"
        self.next_key = last if rows and (more or backwards) else None
        self.previous_key = first if rows and position is not None and (more or not backwards) else None
        if position is None and not more:
            self.total = (len(rows), True)
        else:
            self.total = self.total_for(queryset)
        return rows

    def _decode(self, raw: str) -> tuple[int, str] | None:
        if raw == "":
            return None
        try:
            if len(raw) > CURSOR_MAX_LENGTH:
                raise ValueError(raw)
            key, direction = signing.loads(raw, salt=self.cursor_salt)
            if type(key) is not int or not 0 <= key <= MAX_KEY or direction not in ("next", "previous"):
                raise ValueError(raw)
        except (signing.BadSignature, ValueError, TypeError):
            raise ValidationFailed(
                "The cursor is not one this list gave out (or has expired); start again with `cursor=`.",
                code="invalid_cursor",
                fields={self.cursor_query_param: ["invalid"]},
            ) from None
        return key, direction

    def _link(self, key: int | None, direction: str) -> str | None:
        if key is None:
            return None
        url = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
        return replace_query_param(url, self.cursor_query_param, signing.dumps([key, direction], salt=self.cursor_salt))

    def get_paginated_response(self, data):
        if not self.cursor_mode:
            return super().get_paginated_response(data)
        value, exact = self.total
        return Response(
            {
                "total": {"value": value, "exact": exact},
                "next": self._link(self.next_key, "next"),
                "previous": self._link(self.previous_key, "previous"),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        link = {"type": "string", "nullable": True, "format": "uri"}
        cursor_page = {
            "type": "object",
            "required": ["total", "next", "previous", "results"],
            "properties": {
                "total": {
                    "type": "object",
                    "required": ["value", "exact"],
                    "description": "How many items the list holds: counted (`exact`) or the planner's estimate.",
                    "properties": {"value": {"type": "integer", "minimum": 0}, "exact": {"type": "boolean"}},
                },
                "next": link,
                "previous": link,
                "results": schema,
            },
        }
        return {"oneOf": [super().get_paginated_response_schema(schema), cursor_page]}

    def get_schema_operation_parameters(self, view):
        return [
            *super().get_schema_operation_parameters(view),
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": (
                    "Keyset pages instead of page numbers: empty for the first page, then the `next`/`previous` "
                    "links' values. Only the default order (`-id`); `total` is cached or estimated."
                ),
                "schema": {"type": "string", "maxLength": CURSOR_MAX_LENGTH},
            },
        ]
