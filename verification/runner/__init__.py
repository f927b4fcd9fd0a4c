"""Speedproof verification runner: sandboxed A/B benchmark runs, correctness on hidden inputs and a
sequential statistical decision. Plain Python: nothing here may import Django.

    from verification.runner import run_verification, calibrate, Criteria
"""

from .calibration import CalibrationResult, calibrate
from .certificate import (
    CertificateError,
    generate_signing_key,
    load_private_key,
    load_public_key,
    sign_report,
    verify_certificate,
)
from .criteria import Criteria, CriteriaError
from .report import RUNNER_VERSION, Report
from .session import DEFAULT_BUDGET_PAIRS, Progress, run_verification

__all__ = [
    "DEFAULT_BUDGET_PAIRS",
    "CalibrationResult",
    "CertificateError",
    "Criteria",
    "CriteriaError",
    "Progress",
    "RUNNER_VERSION",
    "Report",
    "calibrate",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "run_verification",
    "sign_report",
    "verify_certificate",
]
