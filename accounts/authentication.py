from axes.helpers import get_client_ip_address
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions

from common.cache import counter_incr
from common.errors import DomainError

from .models import ApiToken
from .services import token_hash

FAILURE_WINDOW_SECONDS = 60


class TooManyFailedAuthentications(DomainError, exceptions.APIException):
    """A DomainError for the one error shape; an APIException so DRF marks the request unauthenticated."""

    status_code = 429
    default_code = "too_many_failed_authentications"


def login_username(request, credentials: dict | None) -> str | None:
    """The username django-axes counts failures against: emails are case-insensitive, so is the count."""
    username = (credentials or {}).get("username") or getattr(request, "POST", {}).get("username")
    return username.strip().lower() if isinstance(username, str) else username


def _failure_key(request) -> str:
    # The window opens at an address's first failure (the key's expiry), not on the clock's minute: a burst
    # that straddles a minute boundary is still one burst.
    return f"auth-failures:bearer:{get_client_ip_address(request)}"


def _failure_record(key: str) -> None:
    counter_incr(key, timeout=FAILURE_WINDOW_SECONDS + 1)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` with a personal API token; errors never echo the token.

    Failures are counted per client address: past BEARER_AUTH_FAILURES_PER_MINUTE, every bearer request from it
    is refused before the token is looked at, so a guess that happens to be right is not observable either.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace") != self.keyword:
            return None
        failure_key = _failure_key(request)
        if (cache.get(failure_key) or 0) >= settings.BEARER_AUTH_FAILURES_PER_MINUTE:
            raise TooManyFailedAuthentications("Too many failed authentications from this address; try again later.")
        if len(header) != 2:
            _failure_record(failure_key)
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        secret = header[1].decode(errors="replace")
        token = ApiToken.objects.select_related("user").filter(token_hash=token_hash(secret)).first()
        now = timezone.now()
        if token is None or not token.is_usable(now) or not token.user.is_active:
            _failure_record(failure_key)
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword
