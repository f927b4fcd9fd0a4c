"""A run's plot, served to operators only (through `admin_site.admin_view`: staff with view permission on runs)."""

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404

from .models import VerificationRun

CONTENT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def run_plot(request, run_id: int, fmt: str):
    if not request.user.has_perm("verification.view_verificationrun"):
        raise PermissionDenied
    if fmt not in CONTENT_TYPES:
        raise Http404
    run = VerificationRun.objects.select_related("plot_png", "plot_svg").filter(pk=run_id).first()
    artifact = getattr(run, f"plot_{fmt}", None) if run else None
    if artifact is None:
        raise Http404
    response = FileResponse(artifact.file.open("rb"), content_type=CONTENT_TYPES[fmt])
    # An SVG opened directly must not run script in the admin's origin.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
