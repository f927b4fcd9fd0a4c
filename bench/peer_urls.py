"""The project's URLs plus two peer job lists that exist only in the benchmark (bench/job_list_load.py).

Both peers serve what the project's list shows a viewer of public jobs (the same rows, the same 25 per page,
newest first, with the organization and the active-bid count) after the same bearer-token authentication:
- `plain-drf/`: what DRF gives out of the box, a `ListAPIView` with a `ModelSerializer` and page numbers
  (an exact COUNT on every page); no response cache, no ETag;
- `raw/`: a Django view with `.values()` and `JsonResponse`, no count, no serializer.
They are yardsticks, not alternatives: neither has the project's visibility scopes, filters or cursors.
"""

from django.db.models import Count, F, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import JsonResponse
from django.urls import include, path
from rest_framework import generics, serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from accounts.authentication import BearerTokenAuthentication
from jobs.models import Bid, Job

FIELDS = [
    "id",
    "title",
    "description",
    "hardware_class",
    "currency",
    "budget_min",
    "budget_max",
    "bidding_deadline",
    "visibility",
    "review_window_hours",
    "max_submissions",
    "criteria",
    "status",
    "published_at",
    "created_at",
]


def public_jobs():
    active_bids = (
        Bid.objects.filter(job=OuterRef("pk"), status__in=Bid.ACTIVE_STATUSES)
        .order_by()
        .values("job")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Job.objects.exclude(status=Job.Status.DRAFT)
        .filter(visibility=Job.Visibility.PUBLIC)
        .annotate(bid_count=Coalesce(Subquery(active_bids, output_field=IntegerField()), 0))
        .order_by("-id")
    )


class PlainOrganizationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class PlainJobSerializer(serializers.ModelSerializer):
    organization = PlainOrganizationSerializer(read_only=True)
    bid_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Job
        fields = [*FIELDS, "organization", "bid_count"]


class PlainPages(PageNumberPagination):
    page_size = 25


class PlainDrfJobList(generics.ListAPIView):
    serializer_class = PlainJobSerializer
    pagination_class = PlainPages
    filter_backends = []

    def get_queryset(self):
        return public_jobs().select_related("organization")


def raw_job_list(request):
    try:
        if BearerTokenAuthentication().authenticate(Request(request)) is None:
            return JsonResponse({"detail": "Authentication required."}, status=401)
    except AuthenticationFailed:
        return JsonResponse({"detail": "Invalid token."}, status=401)
    rows = list(
        public_jobs()
        .annotate(organization_name=F("organization__name"))
        .values(*FIELDS, "organization_id", "organization_name", "bid_count")[:25]
    )
    return JsonResponse({"results": rows})


urlpatterns = [
    path("bench/peers/plain-drf/jobs/", PlainDrfJobList.as_view()),
    path("bench/peers/raw/jobs/", raw_job_list),
    path("", include("marketplace.urls")),
]
