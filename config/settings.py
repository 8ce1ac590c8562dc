"""Settings come from the environment only.

With nothing set this is the embedded default: SQLite, an in-memory channel layer, an in-process task
runner and dispatcher loop. DATABASE_URL and REDIS_URL switch to PostgreSQL, channels_redis and real
Celery workers + beat. Bad values raise ImproperlyConfigured at start-up, not at first use.
"""

from __future__ import annotations

import os
import secrets
import zoneinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
import phonenumbers
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.env import envbool, envchoice, envint, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("DATA_DIR", str(BASE_DIR / "var")))

DATABASE_URL = envstr("DATABASE_URL")
REDIS_URL = envstr("REDIS_URL")
EMBEDDED = not DATABASE_URL

DEBUG = envbool("DEBUG", False)


def _secret_key() -> str:
    key = envstr("SECRET_KEY")
    if key:
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production mode)")
    # The embedded demo keeps a generated key beside its SQLite file so sessions survive restarts.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]
# Public base URL the providers (Twilio) call back on; used to build and verify signed webhook URLs.
PUBLIC_BASE_URL = envstr("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
if not PUBLIC_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must start with http:// or https://, got {PUBLIC_BASE_URL!r}")
if envbool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "contactcenter",
    "channels_adapters",
    "channels_adapters.simulator",
    "channels_adapters.sms",
    "channels_adapters.webchat",
    "campaigns",
    "callbacks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]


def _database() -> dict[str, object]:
    if EMBEDDED:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "hospital.sqlite3"),
            # WAL + IMMEDIATE: the in-process worker and the web server write concurrently; without
            # these SQLite answers "database is locked" instead of waiting its turn.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    try:
        config = dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 0, minimum=0))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL; SQLite is the embedded default")
    pool_size = envint("DB_POOL_MAX_SIZE", 0, minimum=0)
    if pool_size:
        # Daphne runs each sync request on a fresh thread, so CONN_MAX_AGE never reuses a connection
        # there: a pool per process does. The wait stays under Twilio's 15 s webhook timeout.
        if config.get("CONN_MAX_AGE"):
            raise ImproperlyConfigured("DB_CONN_MAX_AGE and DB_POOL_MAX_SIZE exclude each other; set one to 0")
        options = dict(config.get("OPTIONS") or {})
        options["pool"] = {"min_size": min(2, pool_size), "max_size": pool_size, "timeout": 10}
        config["OPTIONS"] = options
    return dict(config)


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_MAX_CONNECTIONS = envint("REDIS_MAX_CONNECTIONS", 1000, minimum=10)
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's default 5 s read timeout would drop the layer's idle blocking reads (an agent socket
            # with nothing to receive), so reads wait as long as the layer asks them to.
            # redis-py 8 also caps a pool at 100 connections and then raises instead of waiting:
            # a few hundred sockets doing group_add and sends at once exceed that in one process.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": REDIS_MAX_CONNECTIONS}],
                "capacity": 1500,
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# How background work runs: "inprocess" (embedded default: a thread pool inside the server process),
# "celery" (real workers on Redis) or "immediate" (on commit, in the caller: tests and scripts).
TASK_RUNNER = envchoice("TASK_RUNNER", "celery" if REDIS_URL else "inprocess", ("inprocess", "celery", "immediate"))
if TASK_RUNNER == "celery" and not REDIS_URL:
    raise ImproperlyConfigured("TASK_RUNNER=celery needs REDIS_URL for the broker")
DISPATCH_INTERVAL_SECONDS = envint("DISPATCH_INTERVAL_SECONDS", 5, minimum=1)

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-work": {
        "task": "contactcenter.tasks.dispatch_due_work",
        "schedule": float(DISPATCH_INTERVAL_SECONDS),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "inbox"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = envstr("HOSPITAL_TIME_ZONE", "Asia/Shanghai")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"HOSPITAL_TIME_ZONE {TIME_ZONE!r} is not an IANA time zone") from None

PHONE_DEFAULT_REGION = envstr("PHONE_DEFAULT_REGION", "CN").upper()
if PHONE_DEFAULT_REGION not in phonenumbers.SUPPORTED_REGIONS:
    raise ImproperlyConfigured(f"PHONE_DEFAULT_REGION {PHONE_DEFAULT_REGION!r} is not a known region code")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "contactcenter.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hospital contact center API",
    "DESCRIPTION": "Patients, conversations and messages for hospital IT integrations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "IdentityKindEnum": "contactcenter.models.patients.IdentityKind",
        "VisitKindEnum": "contactcenter.models.patients.VisitKind",
        "SegmentKindEnum": "campaigns.models.segments.SegmentKind",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}

# The patient-phone simulator: on in the embedded demo, off unless asked for elsewhere.
SIMULATOR_ENABLED = envbool("SIMULATOR_ENABLED", EMBEDDED)
EVENT_RETENTION_DAYS = envint("EVENT_RETENTION_DAYS", 7, minimum=1)

# SMS (Twilio). The auth token is never stored: each inbox names the environment variable holding it.
# "simulator" keeps the real SDK but swaps its HTTP client for one that delivers to the patient-phone
# page and posts signed status callbacks back to our own URLs; nothing leaves the machine.
TWILIO_TRANSPORT = envchoice("TWILIO_TRANSPORT", "simulator" if EMBEDDED else "twilio", ("twilio", "simulator"))
if TWILIO_TRANSPORT == "simulator":
    # Nothing leaves the machine in simulator mode, so a fixed token is no secret; webhooks are still
    # signed and verified with it, exactly as in production.
    os.environ.setdefault("TWILIO_AUTH_TOKEN", "embedded-simulator-token")
TWILIO_API_TIMEOUT_SECONDS = envint("TWILIO_API_TIMEOUT_SECONDS", 15, minimum=1)
# Provider requests one worker keeps in flight while it sends a campaign chunk. Twilio answers in ~100-300 ms,
# so one request at a time would cap a worker at a few messages a second whatever the configured rate.
# 1 sends on the worker's own thread.
DELIVERY_CONCURRENCY = envint("DELIVERY_CONCURRENCY", 32, minimum=1)
# A message "sending" with no provider id and no status callback for this long is looked up at the
# provider (contactcenter.actions.delivery.reconcile_unconfirmed): adopted if there, delivered again if not.
DELIVERY_UNCONFIRMED_MINUTES = envint("DELIVERY_UNCONFIRMED_MINUTES", 10, minimum=1)
SMS_OPT_OUT_KEYWORDS = [
    k.strip().upper()
    for k in envstr(
        "SMS_OPT_OUT_KEYWORDS", "STOP,STOPALL,UNSUBSCRIBE,CANCEL,END,QUIT,REVOKE,OPTOUT,退订,TD,T,R,N"
    ).split(",")
    if k.strip()
]
SMS_OPT_IN_KEYWORDS = [
    k.strip().upper() for k in envstr("SMS_OPT_IN_KEYWORDS", "START,UNSTOP,YES").split(",") if k.strip()
]
SMS_HELP_KEYWORDS = [k.strip().upper() for k in envstr("SMS_HELP_KEYWORDS", "HELP,INFO,帮助").split(",") if k.strip()]
SMS_HELP_TEXT = envstr(
    "SMS_HELP_TEXT",
    "Hospital patient service: call 020-12345678 (08:00-17:30). Reply STOP to opt out of marketing. "
    "医院客服电话 020-12345678，拒收营销短信请回复R。",
)

# Web chat widget. Limits apply per visitor and per client IP, counted in the cache (Redis with
# REDIS_URL, so every Daphne process shares them; process memory in the embedded mode).
WEBCHAT_MAX_MESSAGE_CHARS = envint("WEBCHAT_MAX_MESSAGE_CHARS", 2000, minimum=1)
WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR = envint("WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR", 20, minimum=1)
WEBCHAT_MESSAGES_PER_MINUTE_PER_IP = envint("WEBCHAT_MESSAGES_PER_MINUTE_PER_IP", 120, minimum=1)
WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP = envint("WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP", 60, minimum=1)
# Images a visitor attaches: JPEG, PNG, WebP or GIF, recognised by content and re-encoded before storing.
WEBCHAT_MAX_IMAGE_BYTES = envint("WEBCHAT_MAX_IMAGE_BYTES", 5 * 1024 * 1024, minimum=1)
WEBCHAT_MAX_IMAGE_PIXELS = envint("WEBCHAT_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)
WEBCHAT_UPLOADS_PER_MINUTE_PER_VISITOR = envint("WEBCHAT_UPLOADS_PER_MINUTE_PER_VISITOR", 6, minimum=1)
WEBCHAT_UPLOADS_PER_MINUTE_PER_IP = envint("WEBCHAT_UPLOADS_PER_MINUTE_PER_IP", 30, minimum=1)
# Uploaded files (patients' images: PHI). Never served from a public URL: only through the views that check
# who is asking (channels_adapters/webchat/views.py), so there is deliberately no MEDIA_URL route.
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(DATA_DIR / "media")))
if EMBEDDED:
    # The demo hospital page signs its "portal" patient with this; nothing leaves the machine.
    os.environ.setdefault("WEBCHAT_IDENTITY_SECRET", "embedded-demo-identity-secret")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

# Email (SMTP with aiosmtplib): for now the web chat's offline replies. "simulator" builds the same MIME
# message and keeps it for the demo's patient mailbox (/simulator/mailbox/); "off" sends no email, so a
# patient who gave only an email sees the reply on their next visit. EMAIL_SMTP_PASSWORD is read from the
# environment when sending and never kept in settings.
EMAIL_SMTP_HOST = envstr("EMAIL_SMTP_HOST")
EMAIL_TRANSPORT = envchoice(
    "EMAIL_TRANSPORT",
    "smtp" if EMAIL_SMTP_HOST else ("simulator" if EMBEDDED else "off"),
    ("smtp", "simulator", "off"),
)
EMAIL_SMTP_TLS = envbool("EMAIL_SMTP_TLS", False)  # implicit TLS ("SMTPS", usually port 465)
EMAIL_SMTP_STARTTLS = envbool("EMAIL_SMTP_STARTTLS", not EMAIL_SMTP_TLS)
EMAIL_SMTP_PORT = envint("EMAIL_SMTP_PORT", 465 if EMAIL_SMTP_TLS else 587, minimum=1)
EMAIL_SMTP_USERNAME = envstr("EMAIL_SMTP_USERNAME")
EMAIL_FROM_ADDRESS = envstr("EMAIL_FROM_ADDRESS", "" if EMAIL_TRANSPORT == "smtp" else "noreply@hospital.example")
EMAIL_TIMEOUT_SECONDS = envint("EMAIL_TIMEOUT_SECONDS", 15, minimum=1)
if EMAIL_SMTP_TLS and EMAIL_SMTP_STARTTLS:
    raise ImproperlyConfigured("EMAIL_SMTP_TLS and EMAIL_SMTP_STARTTLS cannot both be true")
if EMAIL_TRANSPORT == "smtp" and not EMAIL_SMTP_HOST:
    raise ImproperlyConfigured("EMAIL_TRANSPORT=smtp needs EMAIL_SMTP_HOST")
if EMAIL_SMTP_USERNAME and not os.environ.get("EMAIL_SMTP_PASSWORD"):
    raise ImproperlyConfigured("EMAIL_SMTP_USERNAME is set but EMAIL_SMTP_PASSWORD is not")
if EMAIL_TRANSPORT != "off" and "@" not in EMAIL_FROM_ADDRESS:
    raise ImproperlyConfigured(f"EMAIL_FROM_ADDRESS must be an email address, got {EMAIL_FROM_ADDRESS!r}")

# Post-discharge follow-up (callbacks/). Times are in the hospital's time zone (HOSPITAL_TIME_ZONE).
FOLLOWUP_CALLING_HOURS = envstr("FOLLOWUP_CALLING_HOURS", "09:00-20:00")
SERVICE_CASE_FIRST_CONTACT_HOURS = envint("SERVICE_CASE_FIRST_CONTACT_HOURS", 24, minimum=1)
# The HL7 v2 MLLP listener (manage.py hl7_listener; the run command starts it too).
HL7_MLLP_HOST = envstr("HL7_MLLP_HOST", "127.0.0.1")
HL7_MLLP_PORT = envint("HL7_MLLP_PORT", 2575, minimum=0)
# The HIS's REST/FHIR calls carry this as a bearer token; set it in the environment, never in the code.
HIS_API_TOKEN = envstr("HIS_API_TOKEN")
if EMBEDDED:
    os.environ.setdefault("HIS_API_TOKEN", "embedded-demo-his-token")
    HIS_API_TOKEN = HIS_API_TOKEN or "embedded-demo-his-token"

# SMS campaigns (campaigns/): the cost estimate's price per SMS segment, and the hospital's name for the
# {{ hospital }} placeholder (English and Chinese).
CAMPAIGN_CURRENCY = envstr("CAMPAIGN_CURRENCY", "CNY")
try:
    CAMPAIGN_PRICE_PER_SEGMENT = Decimal(envstr("CAMPAIGN_PRICE_PER_SEGMENT", "0.05"))
except InvalidOperation:
    raise ImproperlyConfigured("CAMPAIGN_PRICE_PER_SEGMENT must be a decimal number, e.g. 0.05") from None
if not CAMPAIGN_PRICE_PER_SEGMENT.is_finite() or CAMPAIGN_PRICE_PER_SEGMENT < 0:
    raise ImproperlyConfigured("CAMPAIGN_PRICE_PER_SEGMENT must be a number of at least 0")
HOSPITAL_NAME = envstr("HOSPITAL_NAME", "Our hospital")
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["CampaignStatusEnum"] = "campaigns.models.campaigns.CampaignStatus"  # type: ignore[index]
HOSPITAL_NAME_ZH = envstr("HOSPITAL_NAME_ZH", "本院")
