"""Schemathesis over the whole OpenAPI schema against a live server: no 5xx, answers match the schema.

Runs the `schemathesis` CLI in its own process (the live server thread keeps this one busy) once with a
company admin's token and once with an engineer's, on seeded data so path ids resolve. Deterministic
generation and bounded examples keep it to a few minutes on two cores.

Not fuzzed: the Stripe webhook endpoints (plain Django views outside the API schema; their signatures
cannot be produced) and the internal verification API (run-token channel, excluded from the schema).
`DELETE /tokens/{id}` targets a spare token, never the one the run authenticates with.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.services import api_token_create
from jobs.services.bids import bid_place
from jobs.services.submissions import submission_create, submission_subject
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, funded_contract, open_job
from tests.factories.archives import make_tar_gz, upload
from verification.models import VerificationRun

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
MAX_EXAMPLES = 20


def _seed() -> dict:
    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    member = CompanyMemberFactory(organization=organization)
    engineer = EngineerFactory()
    job = open_job(admin=admin)
    bid = bid_place(actor=engineer, job=job, amount=150_000, estimated_days=5, proposal="Vectorize it.")
    contract = funded_contract(admin=admin, engineer=engineer)
    candidate = upload(make_tar_gz({"impl/run.py": b"print('fast')\n"}), name="candidate.tar.gz")
    submission = submission_create(actor=engineer, contract=contract, upload=candidate, notes="v1")
    run = VerificationRun.objects.filter(subject=submission_subject(submission.pk)).order_by("-id").first()
    ids = {
        "job": job.pk,
        "bid": bid.pk,
        "contract": contract.pk,
        "submission": submission.pk,
        "run": run.pk if run else 1,
        "organization": organization.pk,
        "membership": member.memberships.get().pk,
        "engineer": engineer.pk,
        "escrow": contract.escrow_id,
        "payment_intent": contract.escrow.payment_intent_id,
    }
    return {"ids": ids, "admin": admin, "engineer": engineer}


def _config(ids: dict, spare_token_id: int) -> str:
    """Path ids per operation group, so generated requests reach the seeded objects."""

    def operations(path_regex: str, **parameters) -> str:
        lines = "\n".join(f'"path.{name}" = {json.dumps(value)}' for name, value in parameters.items())
        return f'[[operations]]\ninclude-path-regex = "{path_regex}"\n[operations.parameters]\n{lines}\n'

    return "\n".join(
        [
            # Negative coverage cases multiply per parameter; the fuzzing phase still sends invalid data.
            '[phases.coverage.generation]\nmode = "positive"\n',
            operations("^/api/v1/jobs/", id=ids["job"]),
            operations("^/api/v1/bids/", id=ids["bid"]),
            operations("^/api/v1/contracts/", id=ids["contract"]),
            operations("^/api/v1/submissions/", id=ids["submission"], run_id=ids["run"]),
            operations("^/api/v1/organizations/\\\\{id\\\\}", id=ids["organization"]),
            operations("^/api/v1/organizations/\\\\{organization_pk\\\\}", organization_pk=ids["organization"]),
            operations("/members/\\\\{id\\\\}", organization_pk=ids["organization"], id=ids["membership"]),
            operations("^/api/v1/tokens/", id=spare_token_id),
            operations("^/api/v1/engineers/", user_id=ids["engineer"]),
            operations("^/api/v1/payments/escrows/", escrow_id=ids["escrow"]),
            operations("^/api/v1/payments/offline/", payment_intent_id=ids["payment_intent"]),
        ]
    )


@pytest.fixture
def fuzz_server(live_server, settings, dispatched):
    # Throttling is documented (429) but would stop the fuzzer reaching the rest of the API.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "1000000/min", "user": "1000000/min"},
    }
    return live_server


def _schemathesis(base_url: str, token: str, config_path: Path, report_dir: Path) -> subprocess.CompletedProcess:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config_path),
        "--no-color",
        "run",
        f"{base_url}/api/schema/",
        "--url",
        base_url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20240612",
        "--generation-deterministic",
        "--generation-with-security-parameters",
        "false",
        "--no-shrink",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--output-sanitize",
        "true",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)


@pytest.mark.parametrize("role", ["admin", "engineer"])
def test_schemathesis_finds_no_server_error_or_schema_violation(fuzz_server, tmp_path, role):
    seeded = _seed()
    user = seeded[role]
    token = api_token_create(user=user, name="fuzz").secret
    spare = api_token_create(user=user, name="fuzz-spare").token
    config_path = tmp_path / "schemathesis.toml"
    config_path.write_text(_config(seeded["ids"], spare.pk))

    result = _schemathesis(fuzz_server.url, token, config_path, tmp_path / "report")

    output = (result.stdout + result.stderr).replace(token, "spk_<redacted>")
    print(f"schemathesis as {role}:\n{output[-2_500:]}")  # the summary, for `pytest -s`
    assert result.returncode == 0, output[-20_000:]
