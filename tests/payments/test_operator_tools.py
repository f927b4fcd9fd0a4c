"""A payments operator's freeze, unfreeze and refund of an escrow, as services and through the admin's
confirmation pages (a note is required; support sees no money actions and is refused by the services)."""

import pytest
from django.contrib.auth.models import Group

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT
from common.errors import IllegalTransition, NotPermitted, ValidationFailed
from common.models import AuditEvent
from payments import selectors, services
from payments.errors import EscrowFrozen
from payments.models import Escrow, ProviderOperation
from tests.factories import StaffFactory

from .conftest import funded_escrow

pytestmark = pytest.mark.django_db
OP = ProviderOperation
S = Escrow.Status


def operator(role: str = PAYMENTS_OPERATOR):
    user = StaffFactory(is_superuser=False)
    user.groups.add(Group.objects.get(name=role))
    return user


def release(escrow, settle, fraction_bps=10_000):
    return settle(
        services.escrow_release, escrow_id=escrow.pk, fraction_bps=fraction_bps, reason="pass", verification_run_id="r"
    )


def test_freeze_blocks_a_release_and_unfreeze_lets_it_go(world, settle, parties):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    actor = operator()

    settle(services.escrow_freeze, escrow_id=escrow.pk, actor=actor, note="fraud review")

    with pytest.raises(EscrowFrozen):
        release(escrow, settle)
    with pytest.raises(EscrowFrozen):
        services.escrow_refund_remainder(escrow_id=escrow.pk, reason="x")
    assert selectors.escrow_summary(escrow.pk).operator_frozen
    settle(services.escrow_unfreeze, escrow_id=escrow.pk, actor=actor, note="review done")
    release(escrow, settle)
    assert selectors.escrow_summary(escrow.pk).paid == 200_000
    verbs = list(
        AuditEvent.objects.filter(object_id=str(escrow.pk), verb__startswith="escrow_operator").values_list(
            "verb", "actor", "data__note"
        )
    )
    assert verbs == [
        ("escrow_operator_frozen", actor.pk, "fraud review"),
        ("escrow_operator_unfrozen", actor.pk, "review done"),
    ]


def test_a_transfer_pending_when_frozen_waits_and_goes_on_unfreeze(stripe_world, settle, parties):
    world = stripe_world
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    actor = operator()
    # Released, and frozen before the worker picked the transfer up.
    release(escrow, lambda fn, **kw: fn(**kw))
    services.escrow_freeze(escrow_id=escrow.pk, actor=actor, note="hold")
    op = OP.objects.get(escrow=escrow, kind=OP.Kind.TRANSFER)
    services.payment_operation_execute(operation_id=op.pk)
    services.payouts_retry_payable(older_than=__import__("datetime").timedelta(0))
    assert world.fake.count("transfer") == 0
    settle(services.escrow_unfreeze, escrow_id=escrow.pk, actor=actor, note="go")
    assert world.fake.count("transfer") == 1
    assert OP.objects.get(pk=op.pk).status == OP.Status.SUCCEEDED


def test_operator_unfreeze_does_not_end_a_chargeback_freeze(stripe_world, settle, parties):
    world = stripe_world
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    actor = operator()
    settle(services.escrow_freeze, escrow_id=escrow.pk, actor=actor, note="hold")
    dispute = world.fake.dispute_open(escrow.charge_id)
    settle(world.deliver)
    settle(services.escrow_unfreeze, escrow_id=escrow.pk, actor=actor, note="lift mine")
    escrow.refresh_from_db()
    assert escrow.frozen and not escrow.operator_frozen
    with pytest.raises(EscrowFrozen):
        release(escrow, settle)
    # And the dispute's end does not lift an operator's hold.
    settle(services.escrow_freeze, escrow_id=escrow.pk, actor=actor, note="hold again")
    world.fake.dispute_close(dispute["id"], "won")
    settle(world.deliver)
    escrow.refresh_from_db()
    assert not escrow.frozen and escrow.operator_frozen
    with pytest.raises(EscrowFrozen):
        release(escrow, settle)


def test_an_operator_refunds_the_remainder_once(world, settle, parties):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    release(escrow, settle, 5_000)
    actor = operator()

    result = settle(services.escrow_refund_remainder_by_operator, escrow_id=escrow.pk, actor=actor, note="agreed")
    again = settle(services.escrow_refund_remainder_by_operator, escrow_id=escrow.pk, actor=actor, note="agreed")

    assert (result.refund_amount, result.status) == (110_000, S.CLOSED)
    assert again.operation_key == result.operation_key
    assert OP.objects.filter(escrow=escrow, kind=OP.Kind.REFUND).count() == 1
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.refunded, summary.fee_kept, summary.held) == (100_000, 110_000, 10_000, 0)
    audit = AuditEvent.objects.get(verb="escrow_refunded", object_id=str(escrow.pk))
    assert audit.actor_id == actor.pk and audit.data["note"] == "agreed"


def test_operator_refund_is_refused_while_frozen_and_when_nothing_is_held(offline_world, settle, parties):
    admin, org, engineer = parties
    settle(offline_world.onboard, engineer)
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    actor = operator()
    settle(services.escrow_freeze, escrow_id=escrow.pk, actor=actor, note="hold")
    with pytest.raises(EscrowFrozen):
        services.escrow_refund_remainder_by_operator(escrow_id=escrow.pk, actor=actor, note="refund")
    settle(services.escrow_unfreeze, escrow_id=escrow.pk, actor=actor, note="go")
    release(escrow, settle)
    with pytest.raises(IllegalTransition) as nothing:
        services.escrow_refund_remainder_by_operator(escrow_id=escrow.pk, actor=actor, note="refund")
    assert nothing.value.code == "nothing_held"


@pytest.mark.parametrize(
    "call",
    [
        lambda pk, actor, note: services.escrow_freeze(escrow_id=pk, actor=actor, note=note),
        lambda pk, actor, note: services.escrow_unfreeze(escrow_id=pk, actor=actor, note=note),
        lambda pk, actor, note: services.escrow_refund_remainder_by_operator(escrow_id=pk, actor=actor, note=note),
    ],
)
def test_support_and_other_users_are_refused_and_a_note_is_required(offline_world, settle, parties, call):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    for who in (operator(SUPPORT), admin, engineer, None):
        with pytest.raises(NotPermitted):
            call(escrow.pk, who, "a note")
    with pytest.raises(ValidationFailed):
        call(escrow.pk, operator(), "")
    escrow.refresh_from_db()
    assert (escrow.operator_frozen, escrow.status) == (False, S.FUNDED)
    assert not OP.objects.filter(escrow=escrow).exists()


# ---- the admin -----------------------------------------------------------------------------------


def test_admin_freeze_from_the_changelist_needs_the_confirmation_page_and_a_note(
    client, offline_world, settle, parties
):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    actor = operator()
    client.force_login(actor)
    url = "/admin/payments/escrow/"

    page = client.post(url, {"action": "escrow_freeze", "_selected_action": [escrow.pk]})
    assert page.status_code == 200 and b'name="note"' in page.content and b"Freeze the escrow" in page.content
    assert not Escrow.objects.get(pk=escrow.pk).operator_frozen
    blank = client.post(url, {"action": "escrow_freeze", "_selected_action": [escrow.pk], "apply": "1", "note": ""})
    assert blank.status_code == 200 and not Escrow.objects.get(pk=escrow.pk).operator_frozen
    done = client.post(
        url, {"action": "escrow_freeze", "_selected_action": [escrow.pk], "apply": "1", "note": "chargeback risk"}
    )
    assert done.status_code == 302
    escrow.refresh_from_db()
    assert escrow.operator_frozen and escrow.operator_frozen_reason == "chargeback risk"
    assert AuditEvent.objects.get(verb="escrow_operator_frozen", object_id=str(escrow.pk)).actor == actor


def test_admin_retry_from_the_operation_page(client, stripe_world, settle, parties):
    from .test_operation_retry import blocked_release

    escrow, op, _ = blocked_release(stripe_world, settle, parties)
    client.force_login(operator())
    change = client.get(f"/admin/payments/provideroperation/{op.pk}/change/")
    action_url = f"/admin/payments/provideroperation/{op.pk}/operator/operation_retry/"
    assert change.status_code == 200 and action_url.encode() in change.content
    assert client.get(action_url).status_code == 200
    response = settle(client.post, action_url, {"apply": "1", "note": "capability back"})
    assert response.status_code == 302
    assert OP.objects.get(retry_of=op).status == OP.Status.SUCCEEDED
    assert stripe_world.fake.count("transfer") == 1


def test_support_sees_no_money_actions_and_is_refused_if_it_posts_anyway(client, offline_world, settle, parties):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    client.force_login(operator(SUPPORT))
    changelist = client.get("/admin/payments/escrow/")
    assert changelist.status_code == 200 and b"escrow_freeze" not in changelist.content
    change = client.get(f"/admin/payments/escrow/{escrow.pk}/change/")
    assert change.status_code == 200 and b"/operator/" not in change.content
    posted = client.post(
        f"/admin/payments/escrow/{escrow.pk}/operator/escrow_freeze/", {"apply": "1", "note": "let me"}
    )
    assert posted.status_code == 403
    client.post(
        "/admin/payments/escrow/",
        {"action": "escrow_freeze", "_selected_action": [escrow.pk], "apply": "1", "note": "x"},
    )
    assert not Escrow.objects.get(pk=escrow.pk).operator_frozen
