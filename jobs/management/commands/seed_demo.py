"""Demo data for `make run`: a company with an admin and a member, two engineers, an operator, one open job.

Safe to run again: existing demo accounts are reused and fresh API tokens are printed each time.
"""

import io
import tarfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Membership, User
from accounts.services import api_token_create, company_signup, engineer_signup, membership_add
from jobs.models import Job
from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_create, job_publish

PASSWORD = "speedproof-demo-1"
COMPANY_ADMIN = "admin@acme.example"
COMPANY_MEMBER = "member@acme.example"
ENGINEERS = ("ada@engineers.example", "grace@engineers.example")
OPERATOR = "operator@speedproof.example"
DEMO_JOB_TITLE = "Make our MLP inference 2x faster"
DEMO_CRITERIA = {
    "criteria": [
        {"metric": "latency", "statistic": "median", "kind": "speedup", "threshold": 1.5},
        {"metric": "peak_memory", "statistic": "median", "kind": "no_worse", "tolerance": 0.1},
    ],
    "correctness": {"mode": "numeric", "rtol": 1e-4, "atol": 1e-6},
    "tiers": [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}],
}
EXAMPLE_DIR = Path(settings.BASE_DIR) / "examples" / "mlp"


def _tar_gz(directory: Path, fallback: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if directory.is_dir():
            for path in sorted(directory.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.add(path, arcname=str(path.relative_to(directory)))
        else:
            for name, content in fallback.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class Command(BaseCommand):
    help = "Create (or refresh) the demo accounts and job, and print their credentials."

    @transaction.atomic
    def handle(self, *args, **options):
        admin = self._company()
        engineers = [self._engineer(email, f"Engineer {index + 1}") for index, email in enumerate(ENGINEERS)]
        operator = User.objects.filter(email=OPERATOR).first() or User.objects.create_superuser(
            email=OPERATOR, password=PASSWORD, name="Operator", account_type=User.AccountType.OPERATOR
        )
        self._job(admin)
        users = [admin, User.objects.get(email=COMPANY_MEMBER), *engineers, operator]
        self.stdout.write("Demo accounts (password for all: %s):" % PASSWORD)
        for user in users:
            ApiToken.objects.filter(user=user, name="demo", revoked_at=None).update(revoked_at=timezone.now())
            token = api_token_create(user=user, name="demo").secret
            self.stdout.write(f"  {user.email:<32} {user.account_type:<9} token: {token}")

    def _company(self) -> User:
        admin = User.objects.filter(email=COMPANY_ADMIN).first()
        if admin is None:
            admin, organization = company_signup(
                email=COMPANY_ADMIN, password=PASSWORD, name="Alice Admin", organization_name="Acme Inference"
            )
            member = User.objects.create_user(
                email=COMPANY_MEMBER, password=PASSWORD, name="Max Member", account_type=User.AccountType.COMPANY
            )
            membership_add(actor=admin, organization=organization, email=member.email, role=Membership.Role.MEMBER)
        return admin

    def _engineer(self, email: str, name: str) -> User:
        return User.objects.filter(email=email).first() or engineer_signup(
            email=email, password=PASSWORD, name=name, headline="Performance engineer", skills=["numpy", "cuda"]
        )

    def _job(self, admin: User) -> Job:
        organization = admin.memberships.get().organization
        job = Job.objects.filter(organization=organization, title=DEMO_JOB_TITLE).first()
        if job is not None:
            return job
        job = job_create(
            actor=admin,
            organization=organization,
            title=DEMO_JOB_TITLE,
            description="Our two-layer MLP serves requests one at a time; make it faster without changing outputs.",
            hardware_class=settings.LOCAL_HARDWARE_CLASS,
            currency="USD",
            budget_min=50_000,
            budget_max=200_000,
            bidding_deadline=timezone.now() + timedelta(days=14),
            review_window_hours=0,
            criteria=DEMO_CRITERIA,
        )
        package = _tar_gz(EXAMPLE_DIR / "package", {"speedproof.toml": b'name = "demo"\n'})
        hidden = _tar_gz(EXAMPLE_DIR / "hidden_inputs", {"inputs/0.json": b"[0.5, 1.5]"})
        job_attach_package(actor=admin, job=job, upload=SimpleUploadedFile("package.tar.gz", package))
        job_attach_hidden_inputs(actor=admin, job=job, upload=SimpleUploadedFile("hidden.tar.gz", hidden))
        return job_publish(actor=admin, job=job)
