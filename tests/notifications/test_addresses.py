"""Where webhooks may go: refused by form and by address, checked without ever contacting the address."""

import pytest

from notifications import addresses
from notifications.addresses import AddressRefused, address_refusal, url_validate

REFUSED_ADDRESSES = {
    "10.0.0.5": "a private address",
    "172.16.3.4": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a link-local address",  # AWS, GCP and Azure metadata
    "100.100.100.200": "a cloud metadata address",
    "fd00:ec2::254": "a cloud metadata address",
    "fe80::1": "a link-local address",
    "fc00::1": "a private address",
    "224.0.0.1": "a multicast address",
    "ff02::1": "a multicast address",
    "0.0.0.0": "an unspecified address",
    "::": "an unspecified address",
    "240.0.0.1": "a reserved address",
    "100.64.0.1": "a non-public address",  # carrier-grade NAT
    "::ffff:10.0.0.1": "a private address",  # IPv4-mapped
    "127.0.0.1": "a loopback address",
    "::1": "a loopback address",
    "::ffff:127.0.0.1": "a loopback address",
}


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES.items())
def test_non_public_addresses_are_refused(settings, address, reason):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    assert address_refusal(address) == reason


def test_public_addresses_pass():
    assert address_refusal("93.184.215.14") is None
    assert address_refusal("2606:4700:4700::1111") is None


def test_loopback_only_is_allowed_by_the_setting(settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    assert address_refusal("127.0.0.1") is None
    assert address_refusal("169.254.169.254") == "a link-local address"
    assert address_refusal("10.0.0.5") == "a private address"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://93.184.215.14/hook", "webhook_url_scheme"),
        ("ftp://93.184.215.14/hook", "webhook_url_scheme"),
        ("https://user:pw@93.184.215.14/hook", "webhook_url_invalid"),
        ("https:///hook", "webhook_url_invalid"),
        ("https://93.184.215.14:99999/hook", "webhook_url_invalid"),
        ("https://[::1/hook", "webhook_url_invalid"),
        ("https://169.254.169.254/latest/meta-data/", "webhook_url_refused"),
        ("https://10.1.2.3/hook", "webhook_url_refused"),
        ("https://[fd00:ec2::254]/hook", "webhook_url_refused"),
        ("https://127.0.0.1:8000/hook", "webhook_url_refused"),
    ],
)
def test_urls_refused_at_registration(settings, url, code):
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    with pytest.raises(AddressRefused) as refused:
        url_validate(url)
    assert refused.value.code == code


def test_a_host_name_is_refused_if_any_of_its_addresses_is_not_public(settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    # Name resolution is the one thing faked: the suite may not reach a DNS server.
    monkeypatch.setattr(addresses, "host_resolve", lambda host, port: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(AddressRefused, match="private"):
        url_validate("https://hooks.example.test/in")
    monkeypatch.setattr(addresses, "host_resolve", lambda host, port: ["93.184.215.14"])
    url_validate("https://hooks.example.test/in")


def test_localhost_resolves_to_loopback_and_is_refused(settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    settings.WEBHOOKS_REQUIRE_HTTPS = False
    with pytest.raises(AddressRefused, match="loopback"):
        url_validate("http://localhost:9/hook")


def test_http_is_allowed_only_when_https_is_not_required(settings):
    settings.WEBHOOKS_REQUIRE_HTTPS = False
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    url_validate("http://127.0.0.1:9/hook")
