from dataclasses import dataclass

import pytest

from accounts.models import User
from jobs.models import Bid, Contract, Job, Submission
from jobs.services.bids import bid_place
from jobs.services.submissions import submission_create
from tests.factories import (
    CompanyAdminFactory,
    CompanyMemberFactory,
    EngineerFactory,
    JobFactory,
    StaffFactory,
    awarded_contract,
    funded_contract,
    make_tar_gz,
    open_job,
)
from tests.factories.archives import package_archive, upload


@dataclass
class Marketplace:
    admin: User
    member: User
    engineer: User
    other_engineer: User
    other_company_member: User
    staff: User
    draft_job: Job
    open_job: Job
    bid: Bid
    contract: Contract
    unfunded_contract: Contract
    submission: Submission

    def user(self, role: str) -> User | None:
        return None if role == "anonymous" else getattr(self, role)


def candidate_upload():
    return upload(make_tar_gz({"impl/run.py": b"print('fast')\n"}), name="candidate.tar.gz")


@pytest.fixture
def market(db) -> Marketplace:
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    member = CompanyMemberFactory(organization=organization)
    engineer, other_engineer = EngineerFactory(), EngineerFactory()
    other_company_member = CompanyMemberFactory()
    staff = StaffFactory()
    draft_job = JobFactory(organization=organization, created_by=admin)
    from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package

    job_attach_package(actor=admin, job=draft_job, upload=package_archive())
    job_attach_hidden_inputs(actor=admin, job=draft_job, upload=upload(make_tar_gz({"in/0.json": b"1"})))
    job = open_job(admin=admin)
    bid = bid_place(actor=engineer, job=job, amount=150_000, estimated_days=5, proposal="Vectorize it.")
    contract = funded_contract(admin=admin, engineer=engineer)
    unfunded = awarded_contract(admin=admin, engineer=engineer)
    submission = submission_create(actor=engineer, contract=contract, upload=candidate_upload(), notes="v1")
    return Marketplace(
        admin=admin,
        member=member,
        engineer=engineer,
        other_engineer=other_engineer,
        other_company_member=other_company_member,
        staff=staff,
        draft_job=draft_job,
        open_job=job,
        bid=bid,
        contract=contract,
        unfunded_contract=unfunded,
        submission=submission,
    )
