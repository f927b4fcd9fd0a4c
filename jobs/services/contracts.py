from django.db import transaction

from accounts.models import User
from accounts.selectors import user_is_org_admin
from common.errors import NotPermitted
from common.transitions import transition_apply

from ..models import Contract, Job
from ..states import CONTRACT_TRANSITIONS, JOB_TRANSITIONS


def contract_lock(contract_id: int) -> Contract:
    return Contract.objects.select_for_update().get(pk=contract_id)


def contract_cancel_locked(*, contract: Contract, actor: User | None, reason: str) -> Contract:
    contract.status_reason = reason
    return transition_apply(
        contract,
        to=Contract.Status.CANCELLED,
        allowed={Contract.Status.AWAITING_FUNDING: {Contract.Status.CANCELLED}},
        actor=actor,
        verb="contract_cancelled",
        data={"reason": reason},
        update_fields=["status_reason"],
    )


@transaction.atomic
def contract_cancel_unfunded(*, actor: User | None, contract: Contract, reason: str) -> Contract:
    """Cancel a contract that was never funded; its job is cancelled with it."""
    job = Job.objects.select_for_update().get(pk=contract.job_id)
    contract = contract_lock(contract.pk)
    if actor is not None and not user_is_org_admin(user=actor, organization_id=contract.organization_id):
        raise NotPermitted("Only the organization's owners and admins can cancel a contract.")
    contract_cancel_locked(contract=contract, actor=actor, reason=reason)
    transition_apply(job, to=Job.Status.CANCELLED, allowed=JOB_TRANSITIONS, actor=actor, verb="job_cancelled", data={"reason": reason})
    return contract


@transaction.atomic
def contract_activate(*, contract_id: int, actor: User | None = None, reason: str = "funded") -> Contract:
    """Funding arrived: work starts. Safe to call again for an already active contract."""
    contract = Contract.objects.get(pk=contract_id)
    job = Job.objects.select_for_update().get(pk=contract.job_id)
    contract = contract_lock(contract_id)
    if contract.status == Contract.Status.ACTIVE:
        return contract
    contract.status_reason = ""
    transition_apply(
        contract,
        to=Contract.Status.ACTIVE,
        allowed=CONTRACT_TRANSITIONS,
        actor=actor,
        verb="contract_activated",
        data={"reason": reason},
        update_fields=["status_reason"],
    )
    transition_apply(job, to=Job.Status.IN_PROGRESS, allowed=JOB_TRANSITIONS, actor=actor, verb="job_started")
    return contract
