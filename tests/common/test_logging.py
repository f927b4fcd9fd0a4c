"""Real log output, in both formats: tracebacks present as text, secrets and frame locals absent."""

import io
import json
import logging
import logging.config

import pytest
import structlog

from common.logging import build_logging

RUN_TOKEN = "vrt_" + "R" * 43
API_TOKEN = "spk_" + "A" * 43
STRIPE_KEY = "sk_live_" + "S" * 24
RESTRICTED_KEY = "rk_test_" + "K" * 24
WEBHOOK_SECRET = "whsec_" + "W" * 32
SIGNATURE = "t=1700000000,v1=" + "5" * 64
HIDDEN_BYTES = b"HIDDEN-INPUT-42"
PASSWORD = "correct-horse-battery"
SECRETS = [
    RUN_TOKEN,
    API_TOKEN,
    STRIPE_KEY,
    RESTRICTED_KEY,
    WEBHOOK_SECRET,
    "5" * 64,
    "HIDDEN-INPUT-42",
    PASSWORD,
]


def _install(*, json: bool) -> io.StringIO:
    """The real configuration for one format, its console handler writing into a buffer."""
    logging.config.dictConfig(build_logging(json=json, level="INFO"))
    buffer = io.StringIO()
    (handler,) = logging.getLogger().handlers
    handler.setStream(buffer)
    return buffer


@pytest.fixture(params=[True, False], ids=["json", "console"])
def log_output(request, settings):
    buffer = _install(json=request.param)
    yield buffer.getvalue
    logging.config.dictConfig(settings.LOGGING)


def _fail_with_secrets_in_locals_and_message():
    run_token = RUN_TOKEN  # noqa: F841 - a frame local that must not be printed
    hidden_inputs = HIDDEN_BYTES  # noqa: F841
    request_body = {"password": PASSWORD, "hidden_inputs": HIDDEN_BYTES.decode()}  # noqa: F841
    raise RuntimeError(
        f"upstream refused Authorization: Bearer {API_TOKEN} (RunToken {RUN_TOKEN}) "
        f"with {STRIPE_KEY}, {RESTRICTED_KEY} and {WEBHOOK_SECRET}; Stripe-Signature: {SIGNATURE}; "
        f"body {{'password': '{PASSWORD}'}}"
    )


def _assert_traceback_without_secrets(output: str) -> None:
    assert "Traceback (most recent call last)" in output
    assert "_fail_with_secrets_in_locals_and_message" in output
    assert "RuntimeError: upstream refused" in output
    assert "<traceback object" not in output
    for secret in SECRETS:
        assert secret not in output, secret
    assert "[REDACTED]" in output


def test_structlog_exception_has_its_traceback_and_no_secrets(log_output):
    log = structlog.get_logger("tests.logging")
    try:
        _fail_with_secrets_in_locals_and_message()
    except RuntimeError:
        log.exception(
            "call failed",
            token=RUN_TOKEN,
            authorization=f"Bearer {API_TOKEN}",
            request_body={"password": PASSWORD, "hidden_inputs": HIDDEN_BYTES},
            signature=SIGNATURE,
            stripe_secret=STRIPE_KEY,
        )
    _assert_traceback_without_secrets(log_output())


def test_stdlib_exception_has_its_traceback_and_no_secrets(log_output):
    try:
        _fail_with_secrets_in_locals_and_message()
    except RuntimeError:
        logging.getLogger("tests.logging").exception(
            "request %s failed with headers %s", {"password": PASSWORD}, {"Authorization": f"RunToken {RUN_TOKEN}"}
        )
    _assert_traceback_without_secrets(log_output())


def test_json_lines_carry_the_traceback_as_text(settings):
    buffer = _install(json=True)
    try:
        try:
            _fail_with_secrets_in_locals_and_message()
        except RuntimeError:
            structlog.get_logger("tests.logging").exception("call failed", run=7)
        line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    finally:
        logging.config.dictConfig(settings.LOGGING)
    assert line["event"] == "call failed" and line["run"] == 7 and line["level"] == "error"
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert "exc_info" not in line


def test_ordinary_messages_are_left_alone(log_output):
    structlog.get_logger("tests.logging").info("payout released", escrow=12, amount=5000, tokens_left=3)
    output = log_output()
    assert "payout released" in output and "5000" in output
