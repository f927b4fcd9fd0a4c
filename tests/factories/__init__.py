from .accounts import (
    CompanyAdminFactory,
    CompanyMemberFactory,
    EngineerFactory,
    MembershipFactory,
    OrganizationFactory,
    StaffFactory,
    UserFactory,
)
from .archives import make_tar_gz, make_zip, package_archive
from .jobs import BidFactory, JobFactory, awarded_contract, funded_contract, open_job

__all__ = [
    "BidFactory",
    "CompanyAdminFactory",
    "CompanyMemberFactory",
    "EngineerFactory",
    "JobFactory",
    "MembershipFactory",
    "OrganizationFactory",
    "StaffFactory",
    "UserFactory",
    "awarded_contract",
    "funded_contract",
    "make_tar_gz",
    "make_zip",
    "open_job",
    "package_archive",
]
