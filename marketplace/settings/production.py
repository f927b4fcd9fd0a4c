"""Production: every secret and URL comes from the environment; nothing has a default that would work."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
REDIS_URL = env("REDIS_URL")
CACHES = {"default": {"BACKEND": "common.cache.ProjectRedisCache", "LOCATION": REDIS_URL}}
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3 * 3600}
LOG_JSON = True
LOGGING = build_logging(json=True, level=LOG_LEVEL)  # noqa: F405

# HTTPS only. Behind a TLS-terminating proxy (the default) Django learns the scheme from the header the proxy
# sets; set DJANGO_SECURE_PROXY_SSL_HEADER="" when Django itself faces the clients, because a header any
# client can send must not be trusted then.
_proxy_ssl_header = env("DJANGO_SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# In-network callers speak plain HTTP to the container: the compose health check and verification hosts.
SECURE_REDIRECT_EXEMPT = env.list(
    "DJANGO_SECURE_REDIRECT_EXEMPT", default=[r"^health/((live|ready)/)?$", r"^internal/"]
)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a commitment browsers ship and that takes months to undo: only when deliberately configured.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
# The admin and the browsable API read the CSRF token from the page, never from the cookie.
CSRF_COOKIE_HTTPONLY = True
