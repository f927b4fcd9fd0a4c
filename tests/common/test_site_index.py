"""`/` tells a newcomer (or a client) where things are, instead of a 404 page."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db  # readiness probes the database


def test_the_root_is_a_json_index_of_the_service():
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    index = response.json()
    assert index["api"].endswith("/api/v1/")
    assert index["docs"].endswith("/api/docs/") and index["schema"].endswith("/api/schema/")
    assert index["health"].endswith("/health/") and index["admin"].endswith("/admin/")
    for link in ("api", "docs", "redoc", "schema", "health", "admin"):
        assert Client().get(index[link].removeprefix("http://testserver")).status_code in (200, 302), link


def test_the_api_root_lists_collections_that_exist(api_client_for):
    from tests.factories import CompanyAdminFactory

    client = api_client_for(CompanyAdminFactory())
    response = client.get("/api/v1/")
    assert response.status_code == 200
    for name, url in response.json().items():
        if name in ("version",) or "signup" in name:
            continue
        assert client.get(url.removeprefix("http://testserver")).status_code in (200, 403), name
