"""The site root: a small JSON index of where things are, for a person or a client that starts at `/`."""

from django.http import JsonResponse
from django.urls import reverse


def site_index(request):
    def absolute(name: str) -> str:
        return request.build_absolute_uri(reverse(name))

    return JsonResponse(
        {
            "name": "Speedproof",
            "api": request.build_absolute_uri("/api/v1/"),
            "schema": absolute("schema"),
            "docs": absolute("swagger-ui"),
            "health": absolute("health"),
            "admin": absolute("admin:index"),
        }
    )
