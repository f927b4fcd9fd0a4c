"""The channel verification hosts use: authenticated by a per-run token, scoped to that run alone.

Hosts hold no database or payment credentials; everything they need and everything they report
passes through these endpoints. Every token failure answers the same 403, whatever the cause.
"""

import structlog
from django.conf import settings
from django.http import FileResponse
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import NotFound, ValidationFailed

from . import services
from .models import VerificationRun
from .report_schema import report_shape_errors

ARTIFACT_FIELDS = services.ARTIFACT_FIELDS
EARLY_ARTIFACT_FIELDS = ("package", "candidate")
log = structlog.get_logger(__name__)


def _token(request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "RunToken" or not token:
        raise services.RunTokenRejected()
    return token.strip()


def _token_for_run(request, run_id: int) -> str:
    """The request's token once it is known to be this run's, before the body is read: a caller
    without a valid token gets the one 403 whatever it sent, never a validation error."""
    token = _token(request)
    services.verification_run_token_check(run_id=run_id, token=token)
    return token


class RunTokenView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []  # 256-bit per-run tokens; hosts heartbeat often
    schema = None  # internal: not part of the public API document


def _spec(request, run: VerificationRun) -> dict:
    artifacts = {
        name: {
            **described,
            "url": request.build_absolute_uri(f"/internal/verification/runs/{run.pk}/artifacts/{name}/"),
        }
        for name, described in services.run_artifacts(run).items()
    }
    spec = {
        "run_id": run.pk,
        "kind": run.kind,
        "hardware_class": run.hardware_class,
        "criteria": run.criteria,
        "budget_pairs": run.budget_pairs,
        "time_limit_seconds": run.time_limit_seconds,
        "artifacts": artifacts,
    }
    if run.kind == VerificationRun.Kind.CALIBRATION:
        # A calibration measures a few A/A pairs (its budget_pairs) but tells the smallest speedup
        # that a verification, with this deployment's budget, can confirm.
        spec["verification_budget_pairs"] = settings.VERIFICATION_BUDGET_PAIRS
    return spec


class StartSerializer(serializers.Serializer):
    """Who claims the run: hosts older than host identities send nothing, and are refused re-verifications."""

    host_id = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)
    key_id = serializers.CharField(max_length=32, required=False, default="", allow_blank=True)


class RunStartApi(RunTokenView):
    def post(self, request, run_id: int):
        token = _token_for_run(request, run_id)
        serializer = StartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # A host the run excludes gets 409 with code `host_excluded`: it puts the run back for another host.
        run = services.verification_run_start(run_id=run_id, token=token, **serializer.validated_data)
        return Response(_spec(request, run))


class RunArtifactApi(RunTokenView):
    def get(self, request, run_id: int, name: str):
        run = services.verification_run_authenticate(run_id=run_id, token=_token(request))
        # The package and the candidate also while queued, so a host fetches them while its start/
        # is answered (with the run's current token only: a requeued run's old one no longer
        # matches). Hidden inputs only once the run is started, which is audited.
        servable = {VerificationRun.Status.RUNNING} | (
            {VerificationRun.Status.QUEUED} if name in EARLY_ARTIFACT_FIELDS else set()
        )
        if run.status not in servable or name not in ARTIFACT_FIELDS:
            raise NotFound("No such artifact for this run.")
        artifact = getattr(run, name)
        if artifact is None:
            raise NotFound("No such artifact for this run.")
        log.info(
            "verification_artifact_served",
            run_id=run.pk,
            artifact=name,
            run_status=run.status,
            dispatch=run.dispatch_count,
        )
        return FileResponse(
            artifact.file.open("rb"), as_attachment=True, filename=f"{name}.{artifact.archive_format or 'bin'}"
        )


class HeartbeatSerializer(serializers.Serializer):
    progress = serializers.DictField(required=False, default=dict)


class RunHeartbeatApi(RunTokenView):
    def post(self, request, run_id: int):
        token = _token_for_run(request, run_id)
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.verification_run_heartbeat(run_id=run_id, token=token, progress=serializer.validated_data["progress"])
        return Response({"ok": True})


class ResultSerializer(serializers.Serializer):
    report = serializers.DictField()
    certificate = serializers.DictField()

    def validate_report(self, report: dict) -> dict:
        errors = report_shape_errors(report)
        if errors:
            raise ValidationFailed(
                "The report does not have the runner's report shape.", code="invalid_report", fields=errors
            )
        return report


class RunResultApi(RunTokenView):
    def post(self, request, run_id: int):
        token = _token_for_run(request, run_id)
        serializer = ResultSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = services.verification_record_result(
            run_id=run_id, token=token, report=data["report"], certificate=data["certificate"]
        )
        return Response({"status": run.status})


class FailureSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class RunFailureApi(RunTokenView):
    def post(self, request, run_id: int):
        token = _token_for_run(request, run_id)
        serializer = FailureSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.verification_run_report_failure(
            run_id=run_id, token=token, reason=serializer.validated_data["reason"]
        )
        return Response({"status": run.status})
