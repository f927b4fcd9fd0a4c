"""Settings shared by every environment; everything deployment-specific comes from the environment."""

from datetime import timedelta
from pathlib import Path

import environ

from common.logging import build_logging

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None
# Everything the embedded defaults keep on disk: the SQLite database, media, the broker's folders, the cache.
VAR_DIR = Path(env("SPEEDPROOF_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-development-only-not-secret")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "health_check",
    "axes",
    "common",
    "accounts",
    "payments",
    "verification",
    "jobs",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "common.middleware.JsonErrorPagesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "common.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "marketplace.urls"
WSGI_APPLICATION = "marketplace.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
SQLITE_BUSY_TIMEOUT_SECONDS = env.int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30)


def sqlite_options(database: dict) -> None:
    """Make one SQLite file dependable for several processes (web, workers, beat) writing at once.

    WAL lets readers go on while one process writes; writers queue for up to the busy timeout instead of failing
    with "database is locked"; and every transaction takes the write lock when it begins (IMMEDIATE), because a
    transaction that reads first and upgrades to a write later cannot wait for the lock, it fails at once.
    """
    if database["ENGINE"] != "django.db.backends.sqlite3" or database["NAME"] == ":memory:":
        return
    Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    database.setdefault("OPTIONS", {}).update(
        {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000};"
            ),
        }
    )


sqlite_options(DATABASES["default"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# The browsable API's and the admin's logins land somewhere that exists.
LOGIN_REDIRECT_URL = "/api/v1/"
# Password guessing on the login forms (/api-auth/login/, /admin/login/): django-axes refuses a username from an
# address for 15 minutes after 10 failures, even with the right password, and answers 429. Attempts are rows in
# the database (locked while counted), so every web process sees the same count with or without Redis; the address
# is REMOTE_ADDR, which a client cannot forge (behind a proxy, set AXES_IPWARE_* so its header is read instead).
# Unlock early with `manage.py axes_reset_username <email>`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_DISABLE_ACCESS_LOG = True  # only failures are kept: successful logins would grow a table nobody prunes
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False  # no banner line in every process and management command
AXES_USERNAME_FORM_FIELD = "username"  # what the login forms post (the email)
AXES_USERNAME_CALLABLE = "accounts.authentication.login_username"
# Invalid bearer tokens from one client address, per minute, before the API answers 429 to it.
BEARER_AUTH_FAILURES_PER_MINUTE = env.int("BEARER_AUTH_FAILURES_PER_MINUTE", default=30)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "common.cache.ProjectRedisCache", "LOCATION": REDIS_URL}}
else:
    # Web, workers and beat are separate processes that coordinate through the cache (the webhook drain's
    # debounce key, throttling counters): with no Redis it is a folder they all share, never per-process memory.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

# Celery: with no broker configured, a real worker process still runs, on kombu's filesystem transport.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem"):
    for folder in ("broker", "broker-processed", "broker-control"):
        (VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "broker"),
        "data_folder_out": str(VAR_DIR / "broker"),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": 3 * 3600}
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "common.pagination.StablePageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "common.schema.SpeedproofAutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    # Size cap and nesting limit on every JSON body (common/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["common.throttling.AnonRateThrottle", "common.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("THROTTLE_ANON", default="120/min"),
        "user": env("THROTTLE_USER", default="2000/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Speedproof API",
    "DESCRIPTION": "Post optimization jobs, bid, fund contracts and get verified speedups paid.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Ids in paths go through common.converters' bounded `id` converter.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
    # Swagger UI (/api/docs/) and ReDoc (/api/redoc/) load their bundles from this service's static files
    # (drf-spectacular-sidecar): the docs work with no internet, and no page loads code from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No call to swagger.io's online validator either.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "POSTPROCESSING_HOOKS": [
        "common.schema.schema_enums_postprocess",
        "drf_spectacular.hooks.postprocess_schema_enums",
    ],
}

# Marketplace configuration.
HARDWARE_CLASSES = env.list("HARDWARE_CLASSES", default=["cpu-x86", "gpu-h100", "gpu-a100"])
LOCAL_HARDWARE_CLASS = env("LOCAL_HARDWARE_CLASS", default="cpu-x86")
PLATFORM_FEE_BPS = env.int("PLATFORM_FEE_BPS", default=1000)
API_TOKEN_PREFIX = "spk_"
# Organization invites: the token's prefix, and how long an invite can be accepted.
ORGANIZATION_INVITE_TOKEN_PREFIX = "spi_"
ORGANIZATION_INVITE_TTL_HOURS = env.int("ORGANIZATION_INVITE_TTL_HOURS", default=168)
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=64 * 1024 * 1024)
ARCHIVE_MAX_UNCOMPRESSED_BYTES = env.int("ARCHIVE_MAX_UNCOMPRESSED_BYTES", default=512 * 1024 * 1024)
ARCHIVE_MAX_FILES = env.int("ARCHIVE_MAX_FILES", default=5000)
IDEMPOTENCY_KEY_TTL_HOURS = 24
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

LOG_JSON = env.bool("LOG_JSON", default=False)
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = build_logging(json=LOG_JSON, level=LOG_LEVEL)
# An open job stays awardable this long after its bidding deadline before it expires.
JOB_AWARD_WINDOW_DAYS = env.int("JOB_AWARD_WINDOW_DAYS", default=14)
# The operator console lists contracts still unfunded this long after they were made.
OPERATOR_FUNDING_OVERDUE_HOURS = env.int("OPERATOR_FUNDING_OVERDUE_HOURS", default=72)
# Job list and detail responses are cached per visibility scope (common/http_cache.py) for at most this many
# seconds; every change a scope can see invalidates its entries sooner. 0 turns the cache off.
API_RESPONSE_CACHE_SECONDS = env.int("API_RESPONSE_CACHE_SECONDS", default=300)
# Readiness (/health/, /health/ready/) reuses each process's dependency probes for this long.
HEALTH_PROBE_CACHE_SECONDS = env.float("HEALTH_PROBE_CACHE_SECONDS", default=5.0)

# Payments: one provider, chosen once by payments.providers.factory from these settings.
PAYMENT_PROVIDER = env("PAYMENT_PROVIDER", default="offline")  # "offline" or "stripe"
OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION = env.bool("OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION", default=False)
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_CONNECT_WEBHOOK_SECRET = env("STRIPE_CONNECT_WEBHOOK_SECRET", default="")
STRIPE_API_VERSION = env("STRIPE_API_VERSION", default="2025-09-30.clover")
STRIPE_LIVEMODE = env.bool("STRIPE_LIVEMODE", default=False)
# The platform account's country: engineers elsewhere get cross-border ("recipient") connected accounts.
STRIPE_PLATFORM_COUNTRY = env("STRIPE_PLATFORM_COUNTRY", default="US")
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300
# Keys sent to Stripe are "<prefix>:<installation id>:<our key>" (payments/README.md, "Idempotency keys").
PAYMENTS_IDEMPOTENCY_PREFIX = env("PAYMENTS_IDEMPOTENCY_PREFIX", default="sp")
FUNDING_DEADLINE_DAYS = env.int("FUNDING_DEADLINE_DAYS", default=7)
# Who bears Stripe's processing fee when a failed contract is refunded (payments/README.md, "Fees"):
# "platform_absorbs" (the company gets everything back) or "company_bears" (the refund keeps the fee back).
REFUND_FEE_POLICY = env("REFUND_FEE_POLICY", default="platform_absorbs")
# Who bears a chargeback lost after the engineer was paid (payments/README.md, "Disputes"):
# reverse_engineer_share (transfer reversals of the engineer's share) or platform_absorbs.
LOST_DISPUTE_POLICY = env("LOST_DISPUTE_POLICY", default="reverse_engineer_share")
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# Jobs may only be posted in these currencies: the platform account settles (holds a balance) in them, and
# Stripe transfers must be in the currency of the charge's balance transaction.
PLATFORM_SETTLEMENT_CURRENCIES = env.list("PLATFORM_SETTLEMENT_CURRENCIES", default=["USD"])
# Where Stripe Checkout sends the payer back ({CHECKOUT_SESSION_ID} is Stripe's template variable).
CHECKOUT_SUCCESS_URL = env(
    "CHECKOUT_SUCCESS_URL", default=PUBLIC_BASE_URL + "/payments/checkout/done/?session_id={CHECKOUT_SESSION_ID}"
)
CHECKOUT_CANCEL_URL = env("CHECKOUT_CANCEL_URL", default=PUBLIC_BASE_URL + "/payments/checkout/cancelled/")

CELERY_BEAT_SCHEDULE = {
    "jobs-expire-overdue": {"task": "jobs.tasks.jobs_expire_overdue", "schedule": 300.0},
    "payments-expire-unfunded": {"task": "payments.tasks.escrows_expire_unfunded", "schedule": 300.0},
    "payments-reconcile": {"task": "payments.tasks.payments_reconcile", "schedule": 3600.0},
    "payments-pay-out-payable": {"task": "payments.tasks.payouts_retry_payable", "schedule": 600.0},
    "payments-webhook-redrive": {"task": "payments.tasks.webhook_events_redrive", "schedule": 300.0},
}

# Verification: runs go to the queue `verify.<hardware class>`; hosts call back to this address.
INTERNAL_API_BASE_URL = env("INTERNAL_API_BASE_URL", default=PUBLIC_BASE_URL)
VERIFICATION_BUDGET_PAIRS = env.int("VERIFICATION_BUDGET_PAIRS", default=40)
VERIFICATION_CALIBRATION_PAIRS = env.int("VERIFICATION_CALIBRATION_PAIRS", default=8)
# Celery's soft and hard limits per run derive from its budget: (2 × pairs + warm-up) × the per-run limit.
VERIFICATION_RUN_SECONDS_LIMIT = env.int("VERIFICATION_RUN_SECONDS_LIMIT", default=60)
VERIFICATION_TIME_LIMIT_SECONDS = env.int("VERIFICATION_TIME_LIMIT_SECONDS", default=4 * 3600)
VERIFICATION_TOKEN_GRACE_SECONDS = 300
VERIFICATION_QUEUED_TOKEN_HOURS = 24
VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS = env.int("VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS", default=120)
# `verification.progress` webhooks: at most one per run and this many seconds (hosts beat every few seconds).
VERIFICATION_PROGRESS_EVENT_SECONDS = env.int("VERIFICATION_PROGRESS_EVENT_SECONDS", default=30)
CELERY_BEAT_SCHEDULE["verification-watchdog"] = {"task": "verification.tasks.verification_watchdog", "schedule": 60.0}
# Result uploads carry every raw measurement of a run.
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024
CELERY_BEAT_SCHEDULE["jobs-release-due"] = {"task": "jobs.tasks.contracts_release_due", "schedule": 60.0}
CELERY_BEAT_SCHEDULE["jobs-settle-due"] = {"task": "jobs.tasks.contracts_settle_due", "schedule": 60.0}
# Disputes: evidence files (stored and served as downloads, never opened) and when an unruled one is escalated.
DISPUTE_EVIDENCE_MAX_BYTES = env.int("DISPUTE_EVIDENCE_MAX_BYTES", default=10 * 1024 * 1024)
DISPUTE_EVIDENCE_MAX_FILES = env.int("DISPUTE_EVIDENCE_MAX_FILES", default=5)
DISPUTE_ESCALATE_AFTER_HOURS = env.int("DISPUTE_ESCALATE_AFTER_HOURS", default=72)
CELERY_BEAT_SCHEDULE["jobs-disputes-escalate"] = {"task": "jobs.tasks.disputes_escalate_overdue", "schedule": 900.0}
CELERY_BEAT_SCHEDULE["jobs-review-closing-reminders"] = {
    "task": "jobs.tasks.contracts_remind_review_closing",
    "schedule": 900.0,
}

# Outbound webhooks (notifications; docs/webhooks.md). Safe by default: https only, no loopback; the local
# settings allow both for `make run`, tests turn them on where they need them.
WEBHOOKS_REQUIRE_HTTPS = env.bool("WEBHOOKS_REQUIRE_HTTPS", default=True)
WEBHOOKS_ALLOW_LOOPBACK = env.bool("WEBHOOKS_ALLOW_LOOPBACK", default=False)
WEBHOOKS_API_VERSION = "v1"
WEBHOOKS_SECRET_OVERLAP_HOURS = env.int("WEBHOOKS_SECRET_OVERLAP_HOURS", default=24)
WEBHOOKS_RETRY_WINDOW_HOURS = 72
WEBHOOKS_DISABLE_AFTER_HOURS = 72
# From the environment so that an end-to-end test's worker process retries in seconds, not minutes.
# At least 1 s: a zero or negative base would retry every second for three days.
WEBHOOKS_RETRY_BASE_SECONDS = max(1, env.int("WEBHOOKS_RETRY_BASE_SECONDS", default=30))
WEBHOOKS_RETRY_MAX_SECONDS = 4 * 3600
WEBHOOKS_CONNECT_TIMEOUT_SECONDS = 3
WEBHOOKS_READ_TIMEOUT_SECONDS = 5
WEBHOOKS_TOTAL_TIMEOUT_SECONDS = 10
WEBHOOKS_RESPONSE_MAX_BYTES = 2048
WEBHOOKS_MAX_ENDPOINTS_PER_OWNER = 20
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    **SPECTACULAR_SETTINGS.get("ENUM_NAME_OVERRIDES", {}),
    "WebhookDeliveryStatusEnum": "notifications.models.Delivery.Status",
    # The job's status appears on several serializers (detail, list summary, events): one enum for all.
    "JobStatusEnum": "jobs.models.Job.Status",
    "InviteStatusEnum": "accounts.models.OrganizationInvite.Status",
}
# A pending delivery overdue by this much lost its countdown message: the sweep queues it again.
WEBHOOKS_SWEEP_GRACE_SECONDS = 120
CELERY_BEAT_SCHEDULE["notifications-deliveries-sweep"] = {
    "task": "notifications.tasks.deliveries_enqueue_overdue",
    "schedule": 60.0,
}
# Emails still pending this long after their change committed lost their send message: the sweep queues them.
EMAIL_SWEEP_GRACE_SECONDS = 300
EMAIL_SENDING_STALE_SECONDS = 900
EMAIL_SWEEP_MAX_AGE_HOURS = 72
CELERY_BEAT_SCHEDULE["notifications-emails-sweep"] = {
    "task": "notifications.tasks.emails_enqueue_stale",
    "schedule": 120.0,
}
# Mail (a disabled webhook endpoint's owner is told): printed to the console unless configured otherwise.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Speedproof <noreply@speedproof.local>")
