"""Success criteria and payout tiers: validated by the verification runner's own definition
(`verification.runner.criteria`), whose problems become API field errors under `criteria.`."""

from typing import Any

from common.errors import ValidationFailed
from verification.runner.criteria import Criteria, CriteriaError


def criteria_validate(raw: Any) -> dict:
    """Return the normalized criteria document, or raise ValidationFailed with one entry per bad field."""
    try:
        criteria = Criteria.from_dict(raw, require_tiers=True)
    except CriteriaError as problem:
        fields: dict[str, list[str]] = {}
        for field, message in problem.problems:
            fields.setdefault(f"criteria.{field}" if field else "criteria", []).append(message)
        raise ValidationFailed("The success criteria are invalid.", code="invalid_criteria", fields=fields) from None
    return criteria.to_dict()


def tier_fraction_bps(fraction: float) -> int:
    return round(fraction * 10_000)
