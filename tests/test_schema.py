"""The OpenAPI document states what the API does: errors, headers, enums, media types and bounds."""

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

from common.money import SUPPORTED_CURRENCIES


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operation(schema, path, method):
    return schema["paths"][path][method]


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _parameter(operation, name):
    return next(parameter for parameter in operation["parameters"] if parameter["name"] == name)


def test_every_operation_documents_its_errors_with_the_one_error_shape(schema):
    error = _resolve(schema, {"$ref": "#/components/schemas/Error"})
    detail = _resolve(schema, error["properties"]["error"])
    assert error["required"] == ["error"]
    assert set(detail["required"]) == {"code", "message", "fields"}
    assert detail["properties"]["fields"]["type"] == "object"
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "429" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith("4"):
                    body = response["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/Error"}, (method, path, status)


@pytest.mark.parametrize(
    ("path", "method", "expected", "absent"),
    [
        ("/api/v1/jobs/{id}/", "get", {"401", "403", "404"}, {"409", "422"}),
        ("/api/v1/jobs/{id}/publish/", "post", {"400", "401", "403", "404", "409"}, {"422"}),
        ("/api/v1/jobs/", "post", {"400", "401", "403", "413", "415", "422"}, {"404"}),
        ("/api/v1/jobs/", "get", {"400", "401", "404"}, {"409"}),
        ("/api/v1/auth/signup/company/", "post", {"400", "404", "409"}, {"401"}),  # 404: an unknown invite token
        ("/api/v1/invites/accept/", "post", {"400", "401", "404", "409"}, {"422"}),
        ("/api/v1/verification/keys/", "get", {"401"}, {"403", "404"}),
    ],
)
def test_error_statuses_are_those_the_operation_can_answer(schema, path, method, expected, absent):
    responses = set(_operation(schema, path, method)["responses"])
    assert expected <= responses
    assert not absent & responses


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/jobs/", "post"),
        ("/api/v1/jobs/{id}/bids/", "post"),
        ("/api/v1/bids/{id}/accept/", "post"),
        ("/api/v1/contracts/{id}/submissions/", "post"),
        ("/api/v1/tokens/", "post"),
        ("/api/v1/organizations/{organization_pk}/members/", "post"),
    ],
)
def test_creating_posts_document_the_idempotency_key_header(schema, path, method):
    header = _parameter(_operation(schema, path, method), "Idempotency-Key")
    assert header["in"] == "header"
    assert header.get("required", False) is False


def test_only_creating_posts_take_an_idempotency_key(schema):
    for path, method in [("/api/v1/jobs/{id}/publish/", "post"), ("/api/v1/jobs/{id}/bids/", "get")]:
        names = {parameter["name"] for parameter in _operation(schema, path, method).get("parameters", [])}
        assert "Idempotency-Key" not in names


def test_currency_and_hardware_class_are_enums_on_requests_and_responses(schema):
    for component in ("Job", "JobWriteRequest", "PatchedJobWriteRequest", "Contract"):
        properties = _resolve(schema, {"$ref": f"#/components/schemas/{component}"})["properties"]
        assert set(_resolve(schema, properties["currency"])["enum"]) == SUPPORTED_CURRENCIES, component
        if "hardware_class" in properties:
            assert _resolve(schema, properties["hardware_class"])["enum"] == list(settings.HARDWARE_CLASSES)
    jobs_list = _operation(schema, "/api/v1/jobs/", "get")
    assert set(_resolve(schema, _parameter(jobs_list, "currency")["schema"])["enum"]) == SUPPORTED_CURRENCIES


def test_nullable_fields_are_nullable_and_read_only_fields_are_not_inputs(schema):
    job = _resolve(schema, {"$ref": "#/components/schemas/Job"})
    assert job["properties"]["published_at"].get("nullable") is True
    assert job["properties"]["package"].get("nullable") is True
    write = _resolve(schema, {"$ref": "#/components/schemas/JobWriteRequest"})
    assert not {"id", "status", "bid_count", "created_at"} & set(write["properties"])
    assert not {"id", "status"} & set(write.get("required", []))


@pytest.mark.parametrize(
    "path", ["/api/v1/jobs/{id}/package/", "/api/v1/jobs/{id}/hidden-inputs/", "/api/v1/submissions/{id}/candidate/"]
)
def test_downloads_document_their_archive_media_types(schema, path):
    content = _operation(schema, path, "get")["responses"]["200"]["content"]
    assert set(content) == {"application/gzip", "application/zip", "application/octet-stream"}
    assert content["application/gzip"]["schema"] == {"type": "string", "format": "binary"}


def test_plot_documents_png_and_svg(schema):
    operation = _operation(schema, "/api/v1/submissions/{id}/verification/{run_id}/plot.{fmt}/", "get")
    assert set(operation["responses"]["200"]["content"]) == {"image/png", "image/svg+xml"}
    assert _parameter(operation, "run_id")["schema"]["type"] == "integer"
    assert _resolve(schema, _parameter(operation, "fmt")["schema"])["enum"] == ["png", "svg"]


def test_lists_document_page_bounds_and_only_the_filters_they_read(schema):
    for path in ("/api/v1/jobs/", "/api/v1/bids/", "/api/v1/jobs/{id}/bids/", "/api/v1/contracts/{id}/events/"):
        operation = _operation(schema, path, "get")
        assert _parameter(operation, "page")["schema"]["minimum"] == 1
        page_size = _parameter(operation, "page_size")["schema"]
        assert (page_size["minimum"], page_size["maximum"]) == (1, 100)
    bids_of_job = {
        parameter["name"] for parameter in _operation(schema, "/api/v1/jobs/{id}/bids/", "get")["parameters"]
    }
    assert not {"status", "search", "ordering", "budget_at_least"} & bids_of_job
    bids = {parameter["name"] for parameter in _operation(schema, "/api/v1/bids/", "get")["parameters"]}
    assert not {"search", "ordering"} & bids


def test_unpaginated_lists_are_documented_as_plain_arrays(schema):
    # The signing keys are one small key set, fetched whole by whoever verifies certificates.
    response = _operation(schema, "/api/v1/verification/keys/", "get")["responses"]["200"]
    assert response["content"]["application/json"]["schema"]["type"] == "array"


def test_a_submissions_verification_runs_are_paginated_like_every_other_list(schema):
    operation = _operation(schema, "/api/v1/submissions/{id}/verification/", "get")
    schema_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref == "#/components/schemas/PaginatedVerificationRunList"
    assert {"page", "page_size"} <= {parameter.get("name") for parameter in operation["parameters"]}


def test_bid_list_and_bid_create_document_their_own_answers(schema):
    assert set(_operation(schema, "/api/v1/jobs/{id}/bids/", "get")["responses"]) & {"200", "201"} == {"200"}
    assert set(_operation(schema, "/api/v1/jobs/{id}/bids/", "post")["responses"]) & {"200", "201"} == {"201"}
    assert "200" in _operation(schema, "/api/v1/tokens/{id}/", "delete")["responses"]
