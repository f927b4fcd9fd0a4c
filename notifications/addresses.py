"""Where a webhook may be sent: the URL's form, and every address its host resolves to.

Checked when an endpoint is registered and again for every connection a delivery opens, because DNS can change
between the two (or answer differently each time): the transport connects only to an address it has just
checked, while TLS still verifies the certificate against the URL's host name.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

# Cloud metadata services outside the link-local range (169.254.169.254 is link-local already).
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)


class AddressRefused(Exception):
    """The URL or one of its host's addresses may not receive webhooks; `reason` is safe to show its owner."""

    def __init__(self, reason: str, *, code: str = "webhook_url_refused"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def address_refusal(address: str) -> str | None:
    """Why this IP address may not receive webhooks, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if settings.WEBHOOKS_ALLOW_LOOPBACK else "a loopback address"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for reason, flag in (
        ("an unspecified address", ip.is_unspecified),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
    ):
        if flag:
            return reason
    if not ip.is_global:
        return "a non-public address"
    return None


def url_check(url: str) -> tuple[str, int]:
    """The URL's host and port, if its form is acceptable (no network involved)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AddressRefused("The URL is not valid.", code="webhook_url_invalid") from None
    allowed_schemes = {"https"} if settings.WEBHOOKS_REQUIRE_HTTPS else {"https", "http"}
    if parts.scheme not in allowed_schemes:
        raise AddressRefused(f"The URL must use {' or '.join(sorted(allowed_schemes))}.", code="webhook_url_scheme")
    if not parts.hostname:
        raise AddressRefused("The URL has no host.", code="webhook_url_invalid")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("The URL must not carry credentials.", code="webhook_url_invalid")
    if parts.fragment:
        raise AddressRefused("The URL must not have a fragment.", code="webhook_url_invalid")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def host_resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AddressRefused("The URL's host does not resolve.", code="webhook_url_unresolvable") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def host_checked_address(host: str, port: int) -> str:
    """Resolve the host and refuse it unless every address it has is allowed; returns the one to connect to."""
    addresses = host_resolve(host, port)
    if not addresses:
        raise AddressRefused("The URL's host does not resolve.", code="webhook_url_unresolvable")
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            raise AddressRefused(f"The URL's host resolves to {reason}.")
    return addresses[0]


def url_validate(url: str) -> None:
    """Registration: the URL's form, then every address its host resolves to now."""
    host, port = url_check(url)
    host_checked_address(host, port)
