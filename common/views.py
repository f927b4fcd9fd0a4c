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
            "redoc": absolute("redoc"),
            "health": absolute("health"),
            "admin": absolute("admin:index"),
        }
    )


API_COLLECTIONS = {
    "jobs": "jobs/",
    "bids": "bids/",
    "contracts": "contracts/",
    "organizations": "organizations/",
    "me": "me",
    "tokens": "tokens/",
    "signup_company": "auth/signup/company/",
    "signup_engineer": "auth/signup/engineer/",
    "payments_onboarding": "payments/onboarding/",
    "verification_keys": "verification/keys/",
    "webhook_endpoints": "webhooks/endpoints/",
}


def api_root(request):
    """`/api/v1/`: where the collections are (the schema at /api/schema/ has the rest), for a first look."""
    base = request.build_absolute_uri("/api/v1/")
    return JsonResponse(
        {
            "version": "v1",
            "schema": request.build_absolute_uri(reverse("schema")),
            "docs": request.build_absolute_uri(reverse("swagger-ui")),
            "redoc": request.build_absolute_uri(reverse("redoc")),
            **{name: base + path for name, path in API_COLLECTIONS.items()},
        }
    )
