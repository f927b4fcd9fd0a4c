"""FastReadMixin gives exactly what DRF's own `to_representation` gives, field for field."""

import pytest
from django.test import RequestFactory
from rest_framework import serializers

from common.serializers import FastReadMixin
from jobs.selectors import JobViewerScope, job_list_for_scope
from jobs.serializers import ArtifactSerializer, JobSerializer, JobSummarySerializer, OrganizationRefSerializer
from jobs.services.jobs import job_update
from tests.factories import CompanyAdminFactory, JobFactory
from tests.factories.jobs import open_job

pytestmark = pytest.mark.django_db


def drf_representation(serializer, instance):
    """What DRF builds without the mixin: Serializer.to_representation, nested serializers included."""
    result = {}
    for field in serializer._readable_fields:
        try:
            attribute = field.get_attribute(instance)
        except serializers.SkipField:
            continue
        if attribute is None:
            result[field.field_name] = None
        elif isinstance(field, FastReadMixin):
            result[field.field_name] = drf_representation(field, attribute)
        else:
            result[field.field_name] = field.to_representation(attribute)
    return result


@pytest.fixture
def jobs():
    admin = CompanyAdminFactory()
    published = open_job(admin=admin)  # with a package, criteria and calibration
    job_update(actor=admin, job=published, description="x" * 2_000)  # the summary cuts it
    JobFactory(organization=published.organization, created_by=admin)  # a draft: no package, no publication
    return list(job_list_for_scope(scope=JobViewerScope("staff")).select_related("package"))


@pytest.mark.parametrize("serializer_class", [JobSerializer, JobSummarySerializer])
def test_jobs_read_the_same_as_with_drf(jobs, serializer_class):
    request = RequestFactory().get("/api/v1/jobs/")
    for job in jobs:
        serializer = serializer_class(context={"request": request})
        fast = serializer.to_representation(job)
        assert fast == drf_representation(serializer, job)
        assert list(fast) == list(drf_representation(serializer, job))  # same key order
    assert any(job.package_id is None for job in jobs) and any(job.package_id for job in jobs)


def test_nested_serializers_use_it_too():
    assert issubclass(ArtifactSerializer, FastReadMixin) and issubclass(OrganizationRefSerializer, FastReadMixin)


def test_dict_instances_and_missing_attributes_fall_back_to_drf():
    class Pair(FastReadMixin, serializers.Serializer):
        name = serializers.CharField()
        size = serializers.IntegerField(required=False)
        label = serializers.CharField(source="meta.label", default="none")

    assert Pair().to_representation({"name": "a", "size": 3, "meta": {"label": "L"}}) == {
        "name": "a",
        "size": 3,
        "label": "L",
    }
    assert Pair().to_representation({"name": "b", "meta": {}}) == {"name": "b", "label": "none"}
