"""Demo data for `make run`: a company with an admin and a member, two engineers, an operator, one open job.

Safe to run again: existing demo accounts are reused and fresh API tokens are printed each time. The same box is
written to `var/demo-accounts.txt` (readable by its owner only: the tokens are live credentials), which `make run`
prints again, last, once every process is up.
"""

import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, Membership, User
from accounts.services import api_token_create, company_signup, engineer_signup, membership_add
from jobs.examples import example_criteria, example_hidden_inputs, example_package
from jobs.models import Job
from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_create, job_publish

PASSWORD = "speedproof-demo-1"
COMPANY_ADMIN = "admin@acme.example"
COMPANY_MEMBER = "member@acme.example"
ENGINEERS = ("ada@engineers.example", "grace@engineers.example")
OPERATOR = "operator@speedproof.example"
DEMO_JOB_TITLE = "Make our MLP inference 2x faster"
DEMO_ACCOUNTS_FILE = "demo-accounts.txt"


def boxed(lines: list[str]) -> str:
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line:<{width}} |" for line in lines), rule])


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


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
        lines = [f"Demo accounts (password for all: {PASSWORD})", ""]
        for user in users:
            ApiToken.objects.filter(user=user, name="demo", revoked_at=None).update(revoked_at=timezone.now())
            token = api_token_create(user=user, name="demo").secret
            lines.append(f"{user.email:<30} {user.account_type:<9} Authorization: Bearer {token}")
        lines += ["", f"API {settings.PUBLIC_BASE_URL}/api/v1/   docs /api/docs/   admin /admin/"]
        box = boxed(lines)
        self.stdout.write(box)
        transaction.on_commit(lambda: write_private(Path(settings.VAR_DIR) / DEMO_ACCOUNTS_FILE, box + "\n"))

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
            criteria=example_criteria(),
        )
        package = SimpleUploadedFile("package.tar.gz", example_package())
        job_attach_package(actor=admin, job=job, upload=package)
        hidden = SimpleUploadedFile("hidden.tar.gz", example_hidden_inputs())
        job_attach_hidden_inputs(actor=admin, job=job, upload=hidden)
        return job_publish(actor=admin, job=job)
