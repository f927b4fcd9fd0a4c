"""Jobs and bids are refused up front when the contract they lead to could not be charged or paid out."""

import pytest

from common.errors import ValidationFailed
from jobs.services.bids import bid_place, bid_update
from tests.factories import CompanyAdminFactory, EngineerFactory, open_job
from tests.factories.jobs import job_request_body

pytestmark = pytest.mark.django_db


def _post_job(api_client_for, **overrides):
    return api_client_for(CompanyAdminFactory()).post("/api/v1/jobs/", job_request_body(**overrides), format="json")


def test_a_job_in_a_currency_the_platform_does_not_settle_in_is_a_400(api_client_for, settings):
    settings.PLATFORM_SETTLEMENT_CURRENCIES = ["USD"]
    response = _post_job(api_client_for, currency="EUR")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "currency_not_settled"
    assert "currency" in response.json()["error"]["fields"]
    assert _post_job(api_client_for, currency="USD").status_code == 201


@pytest.mark.parametrize(
    "overrides, code, field",
    [
        # 40 cents + 10% fee = 44 cents: under Stripe's 50-cent minimum.
        ({"budget_min": 40}, "amount_below_minimum", "budget_min"),
        # 99,999,999 + 10% fee has nine digits: over Stripe's eight-digit maximum.
        ({"budget_max": 99_999_999}, "amount_above_maximum", "budget_max"),
        # Three-decimal currencies take only amounts whose last digit is 0.
        ({"currency": "KWD", "budget_min": 10_005, "budget_max": 20_000}, "amount_not_payable_step", "budget_min"),
    ],
)
def test_budgets_that_could_not_be_charged_are_a_400_with_a_code(api_client_for, overrides, code, field):
    response = _post_job(api_client_for, **overrides)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["code"], list(error["fields"])) == (code, [field])


def test_the_largest_chargeable_budget_is_accepted(api_client_for):
    # 90,909,090 + 10% fee (9,090,909) = 99,999,999: exactly Stripe's maximum.
    assert _post_job(api_client_for, budget_max=90_909_090).status_code == 201


def test_bids_are_checked_against_the_charge_they_lead_to():
    job = open_job()
    engineer = EngineerFactory()
    with pytest.raises(ValidationFailed) as below:
        bid_place(actor=engineer, job=job, amount=44, estimated_days=3, proposal="p")  # 44 + 4 fee
    assert below.value.code == "amount_below_minimum"
    with pytest.raises(ValidationFailed) as above:
        bid_place(actor=engineer, job=job, amount=95_000_000, estimated_days=3, proposal="p")
    assert above.value.code == "amount_above_maximum"
    bid = bid_place(actor=engineer, job=job, amount=46, estimated_days=3, proposal="p")  # 46 + 5 fee = 51 cents
    with pytest.raises(ValidationFailed) as update:
        bid_update(actor=engineer, bid=bid, amount=44)
    assert update.value.code == "amount_below_minimum"


def test_bids_on_a_job_whose_currency_is_no_longer_settled_are_refused(settings):
    job = open_job(currency="EUR")
    settings.PLATFORM_SETTLEMENT_CURRENCIES = ["USD"]
    with pytest.raises(ValidationFailed) as refused:
        bid_place(actor=EngineerFactory(), job=job, amount=100_000, estimated_days=3, proposal="p")
    assert refused.value.code == "currency_not_settled"


def test_three_decimal_bids_must_end_in_zero_and_their_fee_rounds_to_ten():
    from jobs.services.bids import bid_accept

    admin = CompanyAdminFactory()
    job = open_job(admin=admin, currency="KWD", budget_min=10_000, budget_max=500_000)
    engineer = EngineerFactory()
    with pytest.raises(ValidationFailed) as refused:
        bid_place(actor=engineer, job=job, amount=123_455, estimated_days=3, proposal="p")
    assert refused.value.code == "amount_not_payable_step"
    contract = bid_accept(
        actor=admin, bid=bid_place(actor=engineer, job=job, amount=123_450, estimated_days=3, proposal="p")
    )
    # 10% of 123.450 KWD is 12.345, rounded half up to the nearest ten fils: 12.350.
    assert (contract.amount, contract.platform_fee) == (123_450, 12_350)
    assert contract.escrow.total % 10 == 0
