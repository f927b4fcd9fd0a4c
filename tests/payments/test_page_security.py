"""The offline checkout page carries the Content-Security-Policy of the service's HTML pages."""

import pytest

from common.middleware import PAGE_POLICY
from payments import services

from .conftest import open_escrow

pytestmark = pytest.mark.django_db


def test_offline_checkout_page_has_the_page_policy(client, parties, settle, offline_world):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer, amount=10_000, fee=1_000)
    payment_intent_id = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    client.force_login(admin)
    page = client.get(f"/payments/offline/checkout/{payment_intent_id}/")
    assert page.status_code == 200
    assert page["Content-Security-Policy"] == PAGE_POLICY
    assert "frame-ancestors 'none'" in PAGE_POLICY and "script-src 'self';" in PAGE_POLICY
