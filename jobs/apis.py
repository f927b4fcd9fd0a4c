from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.models import Organization
from accounts.selectors import user_organization_ids
from common.api import IdempotentCreateMixin, idempotent_response
from common.errors import NotFound, NotPermitted, ValidationFailed
from common.http_cache import IF_NONE_MATCH_HEADER, NOT_MODIFIED_RESPONSE, cached_response, conditional_get
from common.models import Artifact
from common.pagination import PageOrCursorPagination, StablePageNumberPagination, scoped_count, scoped_total
from common.parsers import JSONParser
from common.schema import ARCHIVE_DOWNLOAD_RESPONSES
from verification import selectors as verification_selectors
from verification.serializers import VerificationRunSerializer

from . import selectors
from .filters import JobFilter
from .models import Bid, Contract, Job, Submission
from .response_cache import job_cache_scope
from .serializers import (
    AuditEventSerializer,
    BidSerializer,
    BidWriteSerializer,
    ContractSerializer,
    DisputeAnswerSerializer,
    DisputeCreateSerializer,
    DisputeSerializer,
    FundingInstructionsSerializer,
    JobCancelSerializer,
    JobSerializer,
    JobSummarySerializer,
    JobWriteSerializer,
    SubmissionCreateSerializer,
    SubmissionSerializer,
    UploadSerializer,
)
from .services import bids as bid_services
from .services import contracts as contract_services
from .services import disputes as dispute_services
from .services import jobs as job_services
from .services import submissions as submission_services


def _artifact_download(artifact: Artifact | None, filename: str) -> FileResponse:
    if artifact is None:
        raise NotFound("Nothing has been uploaded yet.", code="artifact_missing")
    extension = artifact.archive_format or "bin"
    return FileResponse(artifact.file.open("rb"), as_attachment=True, filename=f"{filename}.{extension}")


CURSOR_PARAMS = ("cursor", "page", "page_size", "format")


def _created(data) -> Response:
    return Response(data, status=status.HTTP_201_CREATED)


class JobViewSet(IdempotentCreateMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer
    filterset_class = JobFilter
    search_fields = ["title", "description"]
    ordering_fields = ["id", "published_at", "budget_max", "bidding_deadline"]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    idempotent_actions = ("bids",)

    @property
    def pagination_class(self):
        # Only the job list offers cursor pages; the lists under a job (bids, events) keep page numbers.
        return PageOrCursorPagination if getattr(self, "action", None) == "list" else StablePageNumberPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return selectors.job_list_visible(user=self.request.user).select_related("package")

    def _job(self):
        return selectors.job_get_visible(user=self.request.user, job_id=int(self.kwargs["pk"]))

    def _fresh(self, job_id: int):
        return JobSerializer(self.get_queryset().get(pk=job_id)).data

    @extend_schema(
        parameters=[IF_NONE_MATCH_HEADER],
        responses={200: JobSummarySerializer(many=True), 304: NOT_MODIFIED_RESPONSE},
    )
    def list(self, request):
        viewer_scope, cache_scope = job_cache_scope(user=request.user)

        def build() -> Response:
            jobs = selectors.job_list_for_scope(scope=viewer_scope).select_related("package")
            queryset = self.filter_queryset(jobs)
            if "ordering" in request.query_params:
                queryset = queryset.order_by(*queryset.query.order_by, "-id")
            # Counted once per scope, version and filters (page numbers and cursor pages' total); with the cache
            # off, page numbers count every time and cursor pages estimate.
            counting = {
                "request": request,
                "namespace": "jobs:list",
                "scope": cache_scope,
                "ignored_params": CURSOR_PARAMS,
            }
            self.paginator.total_for = lambda counted: scoped_total(counted, **counting)
            self.paginator.count_for = lambda counted: scoped_count(counted, **counting)
            page = self.paginate_queryset(queryset)
            summaries = JobSummarySerializer(page, many=True, context={"request": request}).data
            return self.get_paginated_response(summaries)

        return cached_response(request, namespace="jobs:list", scope=cache_scope, build=build)

    @extend_schema(parameters=[IF_NONE_MATCH_HEADER], responses={200: JobSerializer, 304: NOT_MODIFIED_RESPONSE})
    def retrieve(self, request, pk=None):
        viewer_scope, cache_scope = job_cache_scope(user=request.user)

        def build() -> Response:
            job = selectors.job_list_for_scope(scope=viewer_scope).select_related("package").filter(pk=int(pk)).first()
            if job is None:
                raise NotFound("No such job.", code="job_not_found")
            return Response(JobSerializer(job).data)

        return cached_response(request, namespace="jobs:detail", scope=cache_scope, build=build)

    @extend_schema(request=JobWriteSerializer, responses={201: JobSerializer})
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    def create_response(self, request, *args, **kwargs):
        serializer = JobWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        organization = self._organization_for_create(request.user, data.pop("organization", None))
        job = job_services.job_create(actor=request.user, organization=organization, **data)
        return _created(self._fresh(job.pk))

    @staticmethod
    def _organization_for_create(user, organization_id: int | None) -> Organization:
        member_of = user_organization_ids(user=user)
        if not member_of:
            raise NotPermitted("Only company members can post jobs.", code="not_a_company_member")
        if organization_id is None:
            if len(member_of) != 1:
                raise ValidationFailed(
                    "Name the organization that posts the job.",
                    code="organization_required",
                    fields={"organization": ["required"]},
                )
            organization_id = member_of[0]
        if organization_id not in member_of:
            raise NotPermitted("You can post jobs only for your own organization.")
        return Organization.objects.get(pk=organization_id)

    @extend_schema(request=JobWriteSerializer, responses=JobSerializer)
    def partial_update(self, request, pk=None):
        job = self._job()
        serializer = JobWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("organization", None)
        job_services.job_update(actor=request.user, job=job, **data)
        return Response(self._fresh(job.pk))

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        job = job_services.job_publish(actor=request.user, job=self._job())
        return Response(self._fresh(job.pk))

    @extend_schema(request=JobCancelSerializer, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        serializer = JobCancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = job_services.job_cancel(actor=request.user, job=self._job(), **serializer.validated_data)
        return Response(self._fresh(job.pk))

    @extend_schema(methods=["GET"], responses=ARCHIVE_DOWNLOAD_RESPONSES)
    @extend_schema(methods=["PUT"], request={"multipart/form-data": UploadSerializer}, responses=JobSerializer)
    @action(detail=True, methods=["put", "get"], parser_classes=[MultiPartParser])
    def package(self, request, pk=None):
        job = self._job()
        if request.method == "GET":
            return _artifact_download(job.package, f"job-{job.pk}-package")
        serializer = UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job_services.job_attach_package(actor=request.user, job=job, upload=serializer.validated_data["file"])
        return Response(self._fresh(job.pk))

    @extend_schema(methods=["GET"], responses=ARCHIVE_DOWNLOAD_RESPONSES)
    @extend_schema(methods=["PUT"], request={"multipart/form-data": UploadSerializer}, responses=JobSerializer)
    @action(detail=True, methods=["put", "get"], url_path="hidden-inputs", parser_classes=[MultiPartParser])
    def hidden_inputs(self, request, pk=None):
        job = self._job()
        if not selectors.job_hidden_inputs_visible(user=request.user, job=job):
            raise NotPermitted("Hidden inputs are visible only to the job's organization.")
        if request.method == "GET":
            return _artifact_download(job.hidden_inputs, f"job-{job.pk}-hidden-inputs")
        serializer = UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job_services.job_attach_hidden_inputs(actor=request.user, job=job, upload=serializer.validated_data["file"])
        return Response(self._fresh(job.pk))

    @extend_schema(methods=["GET"], responses=BidSerializer(many=True))
    @extend_schema(methods=["POST"], request=BidWriteSerializer, responses={201: BidSerializer})
    @action(detail=True, methods=["get", "post"])
    def bids(self, request, pk=None):
        job = self._job()
        if request.method == "GET":
            page = self.paginate_queryset(selectors.bid_list_visible(user=request.user, job=job))
            return self.get_paginated_response(BidSerializer(page, many=True).data)
        return idempotent_response(request, lambda: self.bid_create_response(request, job))

    def bid_create_response(self, request, job):
        serializer = BidWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        bid = bid_services.bid_place(actor=request.user, job=job, **serializer.validated_data)
        return _created(BidSerializer(bid).data)

    @extend_schema(responses=AuditEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        job = self._job()
        is_party = (
            request.user.is_staff
            or job.organization_id in user_organization_ids(user=request.user)
            or selectors.contract_list_visible(user=request.user).filter(job=job).exists()
        )
        if not is_party:
            raise NotPermitted("Only the job's parties can read its history.")
        page = self.paginate_queryset(selectors.job_audit_events(job=job))
        return self.get_paginated_response(AuditEventSerializer(page, many=True).data)


class BidViewSet(viewsets.GenericViewSet):
    serializer_class = BidSerializer
    idempotent_actions = ("accept",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Bid.objects.none()
        return selectors.bid_list_visible(user=self.request.user)

    def _bid(self):
        return selectors.bid_get_visible(user=self.request.user, bid_id=int(self.kwargs["pk"]))

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(BidSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(BidSerializer(self._bid()).data)

    @extend_schema(request=BidWriteSerializer, responses=BidSerializer)
    def partial_update(self, request, pk=None):
        serializer = BidWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        bid = bid_services.bid_update(actor=request.user, bid=self._bid(), **serializer.validated_data)
        return Response(BidSerializer(bid).data)

    @extend_schema(request=None, responses=BidSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        bid = bid_services.bid_withdraw(actor=request.user, bid=self._bid())
        return Response(BidSerializer(bid).data)

    @extend_schema(request=None, responses={201: ContractSerializer})
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        bid = self._bid()
        return idempotent_response(
            request, lambda: _created(ContractSerializer(bid_services.bid_accept(actor=request.user, bid=bid)).data)
        )


class ContractViewSet(viewsets.GenericViewSet):
    serializer_class = ContractSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    idempotent_actions = ("submissions",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Contract.objects.none()
        return selectors.contract_list_visible(user=self.request.user)

    def _contract(self):
        return selectors.contract_get_visible(user=self.request.user, contract_id=int(self.kwargs["pk"]))

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ContractSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(ContractSerializer(self._contract()).data)

    @extend_schema(request=JobCancelSerializer, responses=ContractSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        serializer = JobCancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        contract = contract_services.contract_cancel_unfunded(
            actor=request.user, contract=self._contract(), reason=serializer.validated_data["reason"] or "cancelled"
        )
        return Response(ContractSerializer(contract).data)

    @extend_schema(request=None, responses=FundingInstructionsSerializer)
    @action(detail=True, methods=["post"])
    def fund(self, request, pk=None):
        instructions = contract_services.contract_fund_start(actor=request.user, contract=self._contract())
        return Response(FundingInstructionsSerializer(instructions).data)

    @extend_schema(request=None, responses=ContractSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        contract = contract_services.contract_approve_early(actor=request.user, contract=self._contract())
        return Response(ContractSerializer(contract).data)

    @extend_schema(
        request=JobCancelSerializer,
        responses=ContractSerializer,
        description="Kept for older clients: opens a dispute (as `POST /contracts/{id}/disputes/`) with this "
        "reason and no evidence, and answers with the contract.",
    )
    @action(detail=True, methods=["post"])
    def dispute(self, request, pk=None):
        serializer = JobCancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        contract = contract_services.contract_dispute_review(
            actor=request.user, contract=self._contract(), reason=serializer.validated_data["reason"]
        )
        return Response(ContractSerializer(contract).data)

    @extend_schema(methods=["GET"], responses=DisputeSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request={"multipart/form-data": DisputeCreateSerializer, "application/json": DisputeCreateSerializer},
        responses={201: DisputeSerializer},
        description="A party disputes a verified result with a reason and evidence (text and files: PDF, PNG, "
        "JPEG, plain text, zip or gzip). The company disputes the PASS awaiting release; the engineer a FAIL or "
        "INCONCLUSIVE within the job's review window after its decision. The release is frozen and the same "
        "submission is verified again on a different host.",
    )
    @action(detail=True, methods=["get", "post"], parser_classes=[MultiPartParser, FormParser, JSONParser])
    def disputes(self, request, pk=None):
        contract = self._contract()
        if request.method == "GET":
            page = self.paginate_queryset(selectors.dispute_list_visible(user=request.user, contract=contract))
            return self.get_paginated_response(DisputeSerializer(page, many=True).data)
        serializer = DisputeCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dispute = dispute_services.dispute_open(
            actor=request.user,
            contract_id=contract.pk,
            reason=data["reason"],
            evidence_text=data["evidence_text"],
            files=data["files"],
            run_id=data.get("run"),
        )
        return _created(self._dispute_data(contract.pk, dispute.pk))

    def _dispute_data(self, contract_id: int, dispute_id: int) -> dict:
        return DisputeSerializer(
            selectors.dispute_get_visible(user=self.request.user, contract_id=contract_id, dispute_id=dispute_id)
        ).data

    @extend_schema(
        parameters=[OpenApiParameter("dispute_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses=DisputeSerializer,
    )
    @action(detail=True, methods=["get"], url_path="disputes/<id:dispute_id>")
    def dispute_detail(self, request, pk=None, dispute_id=None):
        return Response(self._dispute_data(self._contract().pk, int(dispute_id)))

    @extend_schema(
        parameters=[OpenApiParameter("dispute_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        request={"multipart/form-data": DisputeAnswerSerializer, "application/json": DisputeAnswerSerializer},
        responses=DisputeSerializer,
        description="The other party's answer to the dispute, once: text and evidence files.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="disputes/<id:dispute_id>/answer",
        parser_classes=[MultiPartParser, FormParser, JSONParser],
    )
    def dispute_answer(self, request, pk=None, dispute_id=None):
        contract = self._contract()
        dispute = selectors.dispute_get_visible(user=request.user, contract_id=contract.pk, dispute_id=int(dispute_id))
        serializer = DisputeAnswerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dispute_services.dispute_answer(
            actor=request.user,
            dispute_id=dispute.pk,
            text=serializer.validated_data["answer_text"],
            files=serializer.validated_data["files"],
        )
        return Response(self._dispute_data(contract.pk, dispute.pk))

    @extend_schema(
        parameters=[
            OpenApiParameter("dispute_id", OpenApiTypes.INT, OpenApiParameter.PATH),
            OpenApiParameter("evidence_id", OpenApiTypes.INT, OpenApiParameter.PATH),
        ],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path="disputes/<id:dispute_id>/evidence/<id:evidence_id>")
    def dispute_evidence(self, request, pk=None, dispute_id=None, evidence_id=None):
        evidence = selectors.dispute_evidence_get_visible(
            user=request.user, contract_id=int(pk), dispute_id=int(dispute_id), evidence_id=int(evidence_id)
        )
        # Always a download of opaque bytes: the browser is told not to guess a type, render or run it.
        response = FileResponse(
            evidence.artifact.file.open("rb"),
            as_attachment=True,
            filename=evidence.filename,
            content_type="application/octet-stream",
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        return response

    @extend_schema(methods=["GET"], responses=SubmissionSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request={"multipart/form-data": SubmissionCreateSerializer},
        responses={201: SubmissionSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def submissions(self, request, pk=None):
        contract = self._contract()
        if request.method == "GET":
            page = self.paginate_queryset(selectors.submission_list(contract=contract))
            return self.get_paginated_response(SubmissionSerializer(page, many=True).data)

        def create() -> Response:
            serializer = SubmissionCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            submission = submission_services.submission_create(
                actor=request.user,
                contract=contract,
                upload=serializer.validated_data["file"],
                notes=serializer.validated_data["notes"],
            )
            return _created(SubmissionSerializer(submission).data)

        return idempotent_response(request, create)

    @extend_schema(responses=AuditEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        contract = self._contract()
        page = self.paginate_queryset(selectors.audit_events_for(obj=contract))
        return self.get_paginated_response(AuditEventSerializer(page, many=True).data)


class SubmissionViewSet(viewsets.GenericViewSet):
    serializer_class = SubmissionSerializer
    queryset = Submission.objects.none()

    def _submission(self):
        return selectors.submission_get_visible(user=self.request.user, submission_id=int(self.kwargs["pk"]))

    def retrieve(self, request, pk=None):
        return Response(SubmissionSerializer(self._submission()).data)

    @extend_schema(
        parameters=[IF_NONE_MATCH_HEADER],
        responses={200: VerificationRunSerializer(many=True), 304: NOT_MODIFIED_RESPONSE},
    )
    @action(detail=True, methods=["get"])
    def verification(self, request, pk=None):
        """The submission's verification runs, newest first, paginated like every other list."""
        submission = self._submission()
        runs = verification_selectors.verification_runs_for(
            subject=submission_services.submission_subject(submission.pk)
        )
        owner = request.user.is_staff or selectors.job_hidden_inputs_visible(
            user=request.user, job=submission.contract.job
        )
        page = self.paginate_queryset(runs)
        data = VerificationRunSerializer(page, many=True, context={"hidden_inputs_owner": owner}).data
        # Polled while a run progresses: an unchanged status costs the client a 304.
        return conditional_get(request, self.get_paginated_response(data))

    @extend_schema(
        parameters=[
            OpenApiParameter("run_id", OpenApiTypes.INT, OpenApiParameter.PATH),
            OpenApiParameter("fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=["png", "svg"]),
        ],
        responses={(200, "image/png"): OpenApiTypes.BINARY, (200, "image/svg+xml"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path="verification/<id:run_id>/plot.<plot_format:fmt>")
    def verification_plot(self, request, pk=None, run_id=None, fmt="png"):
        submission = self._submission()
        run = (
            verification_selectors.verification_runs_for(subject=submission_services.submission_subject(submission.pk))
            .filter(pk=run_id)
            .first()
        )
        artifact = getattr(run, f"plot_{fmt}", None) if run else None
        if artifact is None:
            raise NotFound("No plot for this run.", code="plot_missing")
        return FileResponse(artifact.file.open("rb"), content_type="image/png" if fmt == "png" else "image/svg+xml")

    @extend_schema(request=None, responses=SubmissionSerializer)
    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        submission = submission_services.submission_accept_inconclusive(
            actor=request.user, submission=self._submission()
        )
        return Response(SubmissionSerializer(submission).data)

    @extend_schema(responses=ARCHIVE_DOWNLOAD_RESPONSES)
    @action(detail=True, methods=["get"])
    def candidate(self, request, pk=None):
        submission = self._submission()
        return _artifact_download(
            submission.candidate, f"contract-{submission.contract_id}-candidate-{submission.number}"
        )
