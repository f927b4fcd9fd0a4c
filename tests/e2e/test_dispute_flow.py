"""A disputed PASS verified again on a second host, with real processes: the web server, the default worker and
two verification hosts with their own host ids and signing keys. The host that produced the result is refused
the re-verification and puts it back; the other one takes it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Contract, Dispute
from jobs.services.disputes import dispute_rule
from payments.models import Escrow
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory
from tests.factories.jobs import onboard
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, private_key_pem, public_key_pem
from verification.services import signing_key_register

from .conftest import wait_for
from .test_marketplace_flow import Api, _award_and_fund, _post_job, _submit, _verified

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_a_disputed_pass_is_verified_again_on_a_second_host_and_ruled(stack, tmp_path):
    admin, engineer_user = CompanyAdminFactory(), EngineerFactory()
    company, engineer = Api(stack.url, admin), Api(stack.url, engineer_user)
    onboard(engineer_user)
    # The first host puts an excluded run back after a second, so the second host soon gets its turn.
    stack.verifier.kill()
    first = stack.verification_worker(VERIFICATION_HOST_ID="host-a", VERIFICATION_EXCLUDED_RETRY_SECONDS="1")

    job = _post_job(company, review_window_hours=24)
    contract = _award_and_fund(company, engineer, job)
    submission = _verified(engineer, _submit(engineer, contract, "fast"))
    assert submission["status"] == "passed", submission
    original = VerificationRun.objects.get(subject=f"submission:{submission['id']}")
    assert original.host_id == "host-a"

    opened = company(
        "post",
        f"contracts/{contract['id']}/disputes/",
        201,
        data={"reason": "the timings look cached", "evidence_text": "flat latencies"},
        files={"files": ("notes.txt", b"flat latencies across runs\n", "text/plain")},
    )
    assert opened["status"] == "reverifying" and opened["evidence"][0]["content_type"] == "text/plain"
    dispute = Dispute.objects.get(pk=opened["id"])
    rerun_id = dispute.reverification_run_id
    wait_for(lambda: VerificationRun.objects.get(pk=rerun_id).declined_count > 0, what="host-a to refuse the re-run")
    waiting = company("get", f"contracts/{contract['id']}/disputes/{dispute.pk}/")
    assert waiting["reverification"]["state"] == "waiting_for_another_host"

    second_key = generate_signing_key()
    (tmp_path / "second-key.pem").write_bytes(private_key_pem(second_key))
    signing_key_register(public_key_pem=public_key_pem(second_key).decode())
    stack.verification_worker(
        VERIFICATION_HOST_ID="host-b",
        VERIFICATION_SIGNING_KEY_PATH=str(tmp_path / "second-key.pem"),
        VERIFICATION_EXCLUDED_RETRY_SECONDS="1",
    )
    detail = wait_for(
        lambda: (
            (body := engineer("get", f"contracts/{contract['id']}/disputes/{dispute.pk}/"))["status"]
            == "awaiting_ruling"
            and body
        ),
        timeout=240,
        what="the re-verification on host-b",
    )
    assert (detail["original"]["host_id"], detail["reverification"]["host_id"]) == ("host-a", "host-b")
    assert detail["reverification"]["certificate"]["verified"] is True
    assert detail["recommendation"] in ("agree", "disagree")
    assert detail["reverification"]["decision"] in ("PASS", "FAIL", "INCONCLUSIVE")
    first.kill()

    # Nothing was released meanwhile; the ruling releases the PASS.
    Contract.objects.filter(pk=contract["id"]).update(release_due_at=timezone.now() - timedelta(seconds=1))
    escrow_id = Contract.objects.get(pk=contract["id"]).escrow_id
    assert Escrow.objects.get(pk=escrow_id).released_bps == 0
    dispute_rule(dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="both hosts measured it")
    escrow = wait_for(
        lambda: (
            (e := Escrow.objects.get(pk=escrow_id)).operations.filter(kind="transfer", status="succeeded").exists()
            and e
        ),
        what="the transfer after the ruling",
    )
    assert escrow.released_bps == Contract.objects.get(pk=contract["id"]).earned_bps > 0
