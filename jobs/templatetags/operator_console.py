"""`{% operator_queues as queues %}`: the operator lists with their counts and links, for operators only."""

from django import template
from django.urls import reverse

from accounts.operators import SUPPORT, operator_has_role

from .. import selectors
from ..models import Dispute

register = template.Library()

# Each queue's admin list, filtered to what needs attention.
QUEUE_LINKS = {
    "funding_overdue": ("admin:jobs_contract_changelist", "attention=funding_overdue"),
    "disputed": ("admin:jobs_contract_changelist", "attention=disputed"),
    "disputes_escalated": (
        "admin:jobs_dispute_changelist",
        "escalated=yes&status__in=" + ",".join(Dispute.UNRESOLVED_STATUSES),
    ),
    "runs_active": ("admin:verification_verificationrun_changelist", "attention=active"),
    "runs_errored": ("admin:verification_verificationrun_changelist", "attention=errored"),
    "escrows_frozen": ("admin:payments_escrow_changelist", "frozen__exact=1"),
    "deliveries_failing": ("admin:notifications_delivery_changelist", "attention=failing"),
    "reconciliation_open": ("admin:payments_reconciliationissue_changelist", "state=open"),
}


@register.simple_tag(takes_context=True)
def operator_queues(context) -> list[dict]:
    request = context.get("request")
    if request is None or not operator_has_role(user=request.user, role=SUPPORT):
        return []
    return [
        {
            "label": queue.label,
            "count": queue.count,
            "url": f"{reverse(QUEUE_LINKS[queue.name][0])}?{QUEUE_LINKS[queue.name][1]}",
        }
        for queue in selectors.operator_queues()
    ]
