import io

import pytest

from common.services import artifact_store
from tests.factories import make_tar_gz
from tests.factories.jobs import CRITERIA
from tests.factories.verification import fake_report, signed  # noqa: F401 - shared with the tests here
from verification.models import VerificationRun
from verification.services import verification_run_create


def _artifact(files: dict[str, bytes]):
    return artifact_store(fileobj=io.BytesIO(make_tar_gz(files)), archive_format="tar.gz")


@pytest.fixture
def make_run(db, dispatched, django_capture_on_commit_callbacks):
    def make(kind=VerificationRun.Kind.SUBMISSION, subject="test:1"):
        with django_capture_on_commit_callbacks(execute=True):
            run = verification_run_create(
                kind=kind,
                subject=subject,
                hardware_class="cpu-x86",
                package=_artifact({"speedproof.toml": b"format = 1\n"}),
                candidate=_artifact({"impl/run.py": b"fast"}) if kind == VerificationRun.Kind.SUBMISSION else None,
                hidden_inputs=_artifact({"inputs/0.json": b"[1]"}),
                criteria=CRITERIA,
                budget_pairs=8,
            )
        return run, dispatched[-1].token

    return make
