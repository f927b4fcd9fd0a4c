"""One POST of a signed event: short timeouts, no redirects, no proxies, a capped read, checked addresses."""

import time
from dataclasses import dataclass

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .addresses import AddressRefused, host_checked_address, url_check


class _CheckedAddressMixin:
    """Resolve and check the host when the connection opens, then connect to that very address."""

    def _new_conn(self):
        host = self._dns_host
        self._dns_host = host_checked_address(host, self.port)
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


class CheckedHTTPConnection(_CheckedAddressMixin, HTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedAddressMixin, HTTPSConnection):
    pass


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


class CheckedAddressAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": CheckedHTTPConnectionPool,
            "https": CheckedHTTPSConnectionPool,
        }


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    latency_ms: int
    response_excerpt: str
    error: str

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_post(*, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
    """Never raises for the receiver's or the network's faults: they are the result. Errors name the failure's
    kind only, never the URL (its query may hold the owner's own token)."""
    started = time.monotonic()
    deadline = started + settings.WEBHOOKS_TOTAL_TIMEOUT_SECONDS
    session = requests.Session()
    session.trust_env = False  # an environment proxy would connect to an address nobody checked
    session.mount("http://", CheckedAddressAdapter(max_retries=0))
    session.mount("https://", CheckedAddressAdapter(max_retries=0))
    status_code, excerpt, error = None, b"", ""
    try:
        url_check(url)
        with session.post(
            url,
            data=body,
            headers=headers,
            timeout=(settings.WEBHOOKS_CONNECT_TIMEOUT_SECONDS, settings.WEBHOOKS_READ_TIMEOUT_SECONDS),
            allow_redirects=False,
            stream=True,
        ) as response:
            status_code = response.status_code
            for chunk in response.iter_content(chunk_size=1024):
                excerpt += chunk
                if len(excerpt) >= settings.WEBHOOKS_RESPONSE_MAX_BYTES or time.monotonic() > deadline:
                    break
    except AddressRefused as exc:
        error = f"refused: {exc.reason}"
    except requests.Timeout:
        error = "timeout"
    except requests.RequestException as exc:
        error = f"connection failed ({type(exc).__name__})"
    finally:
        session.close()
    latency_ms = int((time.monotonic() - started) * 1000)
    text = excerpt[: settings.WEBHOOKS_RESPONSE_MAX_BYTES].decode("utf-8", errors="replace")
    return PostResult(status_code=status_code, latency_ms=latency_ms, response_excerpt=text, error=error)
