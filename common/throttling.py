"""Fixed-window rate limits: one atomic counter per client and window in the cache (Redis in production).

DRF's default throttles keep every request time of the window in one cached list, whose read, trim and
rewrite grow with the rate allowed; a counter costs the same at any rate (one Redis round trip).
"""

import time

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from common.cache import counter_incr

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, period = rate.split("/")
    return int(count), PERIODS[period[0]]


class FixedWindowThrottle(BaseThrottle):
    scope = ""

    def __init__(self) -> None:
        self.limit, self.window = parse_rate(api_settings.DEFAULT_THROTTLE_RATES[self.scope])
        self.reset_in = 0

    def identity(self, request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        ident = self.identity(request)
        if ident is None:
            return True
        now = time.time()
        window_start = int(now // self.window)
        key = f"throttle:{self.scope}:{ident}:{window_start}"
        count = counter_incr(key, timeout=self.window + 1)
        self.reset_in = int((window_start + 1) * self.window - now) + 1
        return count <= self.limit

    def wait(self) -> float:
        return self.reset_in


class UserRateThrottle(FixedWindowThrottle):
    scope = "user"

    def identity(self, request) -> str | None:
        return str(request.user.pk) if request.user and request.user.is_authenticated else None


class AnonRateThrottle(FixedWindowThrottle):
    scope = "anon"

    def identity(self, request) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.get_ident(request)
