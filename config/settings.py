"""Settings come from the environment only.

With nothing set this is the embedded default: SQLite, an in-memory channel layer, an in-process task
runner and dispatcher loop. DATABASE_URL and REDIS_URL switch to PostgreSQL, channels_redis and real
Celery workers + beat. Bad values raise ImproperlyConfigured at start-up, not at first use.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import zoneinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
import phonenumbers
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.env import envbool, envchoice, envint, envrate, envstr, hosts_beyond_loopback

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("DATA_DIR", str(BASE_DIR / "var")))

DATABASE_URL = envstr("DATABASE_URL")
REDIS_URL = envstr("REDIS_URL")
EMBEDDED = not DATABASE_URL

DEBUG = envbool("DEBUG", False)


def _installation_secret(name: str) -> str:
    """A random secret generated once per installation and kept in DATA_DIR (owner-only), so each demo
    installation has its own and restarts keep it. Never a value shipped in the code: anyone could read that."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / name
    if not path.exists():
        # Written to a private temporary file and linked into place: never readable by others, and two
        # processes starting at once (server, worker, HL7 listener) end up with the same value.
        fd, tmp = tempfile.mkstemp(dir=DATA_DIR, prefix=f".{name}.")
        try:
            os.write(fd, secrets.token_urlsafe(50).encode())
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process was first: use its value
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty; delete it and a new secret is generated")
    return value


def _secret_key() -> str:
    key = envstr("SECRET_KEY")
    if key:
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production mode)")
    # The embedded demo keeps a generated key beside its SQLite file so sessions survive restarts.
    return _installation_secret("secret_key")


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]
# Public base URL the providers (Twilio) call back on; used to build and verify signed webhook URLs.
PUBLIC_BASE_URL = envstr("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
if not PUBLIC_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must start with http:// or https://, got {PUBLIC_BASE_URL!r}")
BEHIND_TLS_PROXY = envbool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

# --- Security: HTTPS only in production (issue 13) ----------------------------------------------------------
# Behind the TLS proxy (docs/production.md) every browser talks HTTPS: cookies only over TLS, plain HTTP
# redirected, HSTS. Off in `make run`, which serves plain HTTP on loopback. HTTPS_ONLY can say so explicitly
# (e.g. Daphne terminating TLS itself); without a proxy header Django could not see HTTPS behind a proxy, and
# the redirect would loop, hence the default.
HTTPS_ONLY = envbool("HTTPS_ONLY", BEHIND_TLS_PROXY)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = LANGUAGE_COOKIE_SECURE = HTTPS_ONLY
SECURE_SSL_REDIRECT = HTTPS_ONLY
# Load balancers and probes check health over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = envint("HSTS_SECONDS", 31_536_000, minimum=0) if HTTPS_ONLY else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is the registrable domain owner's decision (a submission to the browsers' list, hard to undo),
# not something one host of the hospital can opt into: off unless asked, and then check --deploy's reminder
# about it (security.W021) is noise.
SECURE_HSTS_PRELOAD = envbool("HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_REFERRER_POLICY = "same-origin"

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
        # Health checks: a persistent connection that died with a database restart is noticed and replaced at
        # the start of the next request instead of failing it.
        config = dj_database_url.parse(
            DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 0, minimum=0), conn_health_checks=True
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL; SQLite is the embedded default")
    # Daphne runs each sync request on a fresh thread, so CONN_MAX_AGE never reuses a connection there: a pool
    # per process does, and is on by default. A request that cannot get a connection within the pool's timeout
    # is answered 503 (contactcenter.resilience), and webhooks beyond WEBHOOK_MAX_IN_FLIGHT are refused with a
    # 503 before they wait at all (contactcenter.shedding). DB_CONN_MAX_AGE instead turns the pool off.
    pool_size = envint("DB_POOL_MAX_SIZE", 0 if config.get("CONN_MAX_AGE") else 10, minimum=0)
    if pool_size:
        if config.get("CONN_MAX_AGE"):
            raise ImproperlyConfigured("DB_CONN_MAX_AGE and DB_POOL_MAX_SIZE exclude each other; set one to 0")
        options = dict(config.get("OPTIONS") or {})
        # Checked as it is handed out: with conn_health_checks (above) Django gives the pool psycopg_pool's
        # check_connection, so a database restart does not turn into a burst of 500s from connections the pool
        # still held (a dead one is discarded and replaced). `max_lifetime`/`max_idle` recycle connections a
        # firewall may have cut silently.
        options["pool"] = {
            "min_size": min(2, pool_size),
            "max_size": pool_size,
            "timeout": 10,
            "max_idle": 300,
            "max_lifetime": 1800,
        }
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
            # channels_redis, riding out a Redis restart or flush instead of failing every socket (see the module).
            "BACKEND": "contactcenter.layers.ResilientRedisChannelLayer",
            # redis-py's default 5 s read timeout would drop the layer's idle blocking reads (an agent socket
            # with nothing to receive), so reads wait as long as the layer asks them to.
            # redis-py 8 also caps a pool at 100 connections and then raises instead of waiting:
            # a few hundred sockets doing group_add and sends at once exceed that in one process.
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        # A Redis that is unreachable (not merely restarting) must fail fast, so sockets fall back
                        # to polling the event table instead of hanging (contactcenter.layers).
                        "socket_connect_timeout": 2,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                    }
                ],
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
# With acks_late a task taken by a worker that then dies (kill -9, OOM) goes back to the queue only when Redis's
# visibility timeout runs out: kombu's default is an hour. Every task here is short (a delivery, one campaign
# run renews its own lease) and safe to run twice (row claims), so ten minutes; the dispatcher's sweeps
# (stalled deliveries after DELIVERY_STALLED_SECONDS) settle a lost delivery long before that anyway. Retry
# countdowns (at most 64 s) must stay below it, or Redis would hand a waiting retry to a second worker.
CELERY_VISIBILITY_TIMEOUT_SECONDS = envint("CELERY_VISIBILITY_TIMEOUT_SECONDS", 600, minimum=120)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}
# A request that saved a message must not hang or fail because the broker is away: try the publish briefly,
# then give up (taskrunner.enqueue logs it) and let the stalled-delivery sweep hand the message over.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-work": {
        "task": "contactcenter.tasks.dispatch_due_work",
        "schedule": float(DISPATCH_INTERVAL_SECONDS),
    },
}

# --- Security: passwords, sign-in lockout, idle sessions, API tokens (issue 13) -------------------------------
# Every password set through a form (admin, password change) must pass these; the demo's `hospital-demo` does.
PASSWORD_MIN_LENGTH = envint("PASSWORD_MIN_LENGTH", 12, minimum=8)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed sign-ins are counted by django-axes per account and per client IP (REMOTE_ADDR: Daphne's
# --proxy-headers sets it from the proxy's X-Forwarded-For). LOGIN_FAILURES_PER_ACCOUNT failures on one
# username, or LOGIN_FAILURES_PER_IP from one address (higher: a ward's PCs may share one), within
# LOGIN_LOCKOUT_MINUTES lock that account or address for LOGIN_LOCKOUT_MINUTES after the last failure, correct
# password or not. Admins unlock early in Django admin → Axes → Access attempts (delete the rows).
LOGIN_FAILURES_PER_ACCOUNT = envint("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_IP = envint("LOGIN_FAILURES_PER_IP", 20, minimum=1)
if LOGIN_FAILURES_PER_IP < LOGIN_FAILURES_PER_ACCOUNT:
    raise ImproperlyConfigured("LOGIN_FAILURES_PER_IP must be at least LOGIN_FAILURES_PER_ACCOUNT")
LOGIN_LOCKOUT_MINUTES = envint("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
INSTALLED_APPS.append("axes")
AUTHENTICATION_BACKENDS = ["contactcenter.security.LockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "contactcenter.security.LockoutHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Read from the LOGIN_* settings above when used (the per-IP limit is applied by LockoutHandler).
AXES_FAILURE_LIMIT = "contactcenter.security.failure_limit"
AXES_COOLOFF_TIME = "contactcenter.security.cool_off"
AXES_CLIENT_IP_CALLABLE = "contactcenter.security.client_ip"
AXES_LOCKOUT_CALLABLE = "contactcenter.security.lockout_response"
# Never reset on a success: the counts are per username and per IP, and one attacker's own good sign-in from
# an address would otherwise wipe the failures they ran up against other accounts from it.
AXES_RESET_ON_SUCCESS = False
# Its start-up banner on every process and command is noise in the logs; lockouts are still logged.
AXES_VERBOSE = False
# Idle sessions end after SESSION_IDLE_MINUTES without activity. Activity is what a person does: opening a
# page or sending a change (POST/PUT/PATCH/DELETE). The pages' own background reads (API GETs on timers) and
# the websocket are not: an inbox left open on an unattended screen would otherwise stay signed in forever
# (contactcenter.security.IdleSessionMiddleware).
SESSION_IDLE_MINUTES = envint("SESSION_IDLE_MINUTES", 30, minimum=1)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
# API tokens (Django admin → Tokens) stop working this long after they were made; make a new one to renew.
API_TOKEN_TTL_DAYS = envint("API_TOKEN_TTL_DAYS", 30, minimum=1)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
    "contactcenter.security.IdleSessionMiddleware",
)
# Turns a sign-in refused for a lockout into contactcenter.security.lockout_response (429).
MIDDLEWARE.append("axes.middleware.AxesMiddleware")

# --- Security: Content-Security-Policy (django-csp) (issue 13) ----------------------------------------------
# The UI is plain ES modules, stylesheets and JSON data blocks from our own origin: no inline script or style,
# no third-party code. Images may be blob: (web chat images fetched with the visitor token) or data:. 'self'
# covers the same-origin websockets (CSP3). The web chat widget runs on the hospital's other sites under their
# policy, not this one; its script, stylesheet and socket are served cross-origin as before.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "csp.middleware.CSPMiddleware")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

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
        "contactcenter.api.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "contactcenter.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "contactcenter.api.errors.exception_handler",
}
# JSON bodies holding what PostgreSQL cannot store (lone surrogates) are a 400 naming the field (issue 13).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "contactcenter.api.parsers.StorableJSONParser",
    "rest_framework.parsers.FormParser",
    "rest_framework.parsers.MultiPartParser",
]
# --- Security: API throttles, page sizes, docs for staff only (issue 13) -----------------------------------------
# Counted in the cache (Redis with REDIS_URL, shared by every process). Staff per user, generous for the inbox's
# bursts of reads; integrations that authenticate without a staff user (the HIS token) per integration, high
# enough for batch loads; anonymous callers per IP. A caller over its rate gets 429 with Retry-After.
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "contactcenter.api.throttling.StaffRateThrottle",
    "contactcenter.api.throttling.IntegrationRateThrottle",
    "contactcenter.api.throttling.AnonymousRateThrottle",
]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "staff": envrate("API_THROTTLE_STAFF", "1200/min"),
    "integration": envrate("API_THROTTLE_INTEGRATION", "6000/min"),
    "anonymous": envrate("API_THROTTLE_ANONYMOUS", "60/min"),
}
# A page of any list holds at most this many rows; a larger `limit` is served as this many.
API_MAX_PAGE_SIZE = envint("API_MAX_PAGE_SIZE", 500, minimum=1)
INSTALLED_APPS.append("drf_spectacular_sidecar")  # Swagger UI's files, served as our static files
SPECTACULAR_SETTINGS = {
    "TITLE": "Hospital contact center API",
    "DESCRIPTION": "Patients, conversations and messages for hospital IT integrations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI describe the whole API: signed-in staff only (docs redirect to the sign-in page).
    "SERVE_PERMISSIONS": ["contactcenter.api.auth.IsStaff"],
    # Swagger UI from our own static files (drf-spectacular-sidecar): no CDN, so it works on a hospital intranet
    # and under the Content-Security-Policy.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
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
# --- Security: the simulator stays on this machine (issue 13) -----------------------------------------------
# Its pages list patients' phones and every SMS the platform "sent", and it plays Twilio: it answers loopback
# requests only (channels_adapters/simulator/guard.py), and the platform refuses to start with it on when
# ALLOWED_HOSTS lets other machines in or a proxy fronts it (every request would then come from the proxy),
# unless SIMULATOR_ALLOW_REMOTE=true says that is meant (a training room); then the simulator answers anyone.
SIMULATOR_ALLOW_REMOTE = envbool("SIMULATOR_ALLOW_REMOTE", False)
if SIMULATOR_ENABLED and not SIMULATOR_ALLOW_REMOTE:
    _exposed = hosts_beyond_loopback(ALLOWED_HOSTS) + (["BEHIND_TLS_PROXY=true"] if BEHIND_TLS_PROXY else [])
    if _exposed:
        raise ImproperlyConfigured(
            f"SIMULATOR_ENABLED is on but the server is reachable beyond this machine ({', '.join(_exposed)}): the "
            "simulator shows patients' phones and messages. Set SIMULATOR_ENABLED=false, keep ALLOWED_HOSTS to "
            "127.0.0.1,localhost, or set SIMULATOR_ALLOW_REMOTE=true if that is really meant."
        )
EVENT_RETENTION_DAYS = envint("EVENT_RETENTION_DAYS", 7, minimum=1)

# SMS (Twilio). The auth token is never stored: each inbox names the environment variable holding it.
# "simulator" keeps the real SDK but swaps its HTTP client for one that delivers to the patient-phone
# page and posts signed status callbacks back to our own URLs; nothing leaves the machine.
TWILIO_TRANSPORT = envchoice("TWILIO_TRANSPORT", "simulator" if EMBEDDED else "twilio", ("twilio", "simulator"))
if TWILIO_TRANSPORT == "simulator" and not os.environ.get("TWILIO_AUTH_TOKEN"):
    # Nothing leaves the machine in simulator mode, but webhooks are still signed and verified with this token,
    # exactly as in production: generated per installation, so nobody can forge the demo's webhooks with a
    # value read from the code.
    os.environ["TWILIO_AUTH_TOKEN"] = _installation_secret("simulator_twilio_token")
TWILIO_API_TIMEOUT_SECONDS = envint("TWILIO_API_TIMEOUT_SECONDS", 15, minimum=1)
# Twilio's connection overrides, appended as the fragment of every webhook URL we give it (the settings page shows
# them; status callbacks carry them): e.g. "rc=3&rp=5xx" has Twilio retry a 5xx answer three times, so a
# patient's message sent while the database restarts is not lost. See docs/production.md.
# Webhooks one server process handles at once; the next is refused at once with a 503 and Retry-After
# (contactcenter.shedding) rather than queued past the provider's timeout.
WEBHOOK_MAX_IN_FLIGHT = envint("WEBHOOK_MAX_IN_FLIGHT", 32, minimum=1)
WEBHOOK_RETRY_AFTER_SECONDS = envint("WEBHOOK_RETRY_AFTER_SECONDS", 2, minimum=1)
TWILIO_WEBHOOK_OVERRIDES = envstr("TWILIO_WEBHOOK_OVERRIDES").strip().lstrip("#")
if TWILIO_WEBHOOK_OVERRIDES and not re.fullmatch(r"[A-Za-z0-9_.=&,-]+", TWILIO_WEBHOOK_OVERRIDES):
    raise ImproperlyConfigured(
        f"TWILIO_WEBHOOK_OVERRIDES must look like rc=3&rp=5xx (connection overrides), got {TWILIO_WEBHOOK_OVERRIDES!r}"
    )
# Provider requests one worker keeps in flight while it sends a campaign chunk. Twilio answers in ~100-300 ms,
# so one request at a time would cap a worker at a few messages a second whatever the configured rate.
# 1 sends on the worker's own thread.
DELIVERY_CONCURRENCY = envint("DELIVERY_CONCURRENCY", 32, minimum=1)
# A message "sending" with no provider id and no status callback for this long is looked up at the
# provider (contactcenter.actions.delivery.reconcile_unconfirmed): adopted if there, delivered again if not.
DELIVERY_UNCONFIRMED_MINUTES = envint("DELIVERY_UNCONFIRMED_MINUTES", 10, minimum=1)
# ... and when the provider cannot be asked (unreachable, unreadable answers) for this long, the message is failed
# with that reason instead of staying "sending" forever: staff check with the patient and resend.
DELIVERY_UNCONFIRMED_GIVE_UP_HOURS = envint("DELIVERY_UNCONFIRMED_GIVE_UP_HOURS", 24, minimum=1)
# A message still "queued" this long after it was written (or last handed over) lost its delivery task: the broker
# was down at commit, the in-process runner's server stopped, or a worker died holding it. The dispatcher's sweep
# (contactcenter.actions.delivery.redeliver_stalled) hands it over again; delivery's claim keeps that exactly-once.
DELIVERY_STALLED_SECONDS = envint("DELIVERY_STALLED_SECONDS", 60, minimum=5)
# A message the provider accepted whose status has not moved for this long had its status callbacks lost (our
# server was restarting when they came): the provider is asked (poll_unsettled_statuses), once per interval.
DELIVERY_STATUS_POLL_MINUTES = envint("DELIVERY_STATUS_POLL_MINUTES", 15, minimum=1)
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
if EMBEDDED and not os.environ.get("WEBCHAT_IDENTITY_SECRET"):
    # The demo hospital page signs its "portal" patient with this (the demo inbox's identity_secret_env).
    # Generated per installation: with a secret everyone knows, anyone could chat as any patient.
    os.environ["WEBCHAT_IDENTITY_SECRET"] = _installation_secret("webchat_identity_secret")
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
if EMBEDDED and not HIS_API_TOKEN:
    # The demo's token is generated per installation (var/his_api_token; `serve` says where), never shipped.
    HIS_API_TOKEN = _installation_secret("his_api_token")
    os.environ["HIS_API_TOKEN"] = HIS_API_TOKEN

# SMS campaigns (campaigns/): the cost estimate's price per SMS segment, and the hospital's name for the
# {{ hospital }} placeholder (English and Chinese).
CAMPAIGN_CURRENCY = envstr("CAMPAIGN_CURRENCY", "CNY")
try:
    CAMPAIGN_PRICE_PER_SEGMENT = Decimal(envstr("CAMPAIGN_PRICE_PER_SEGMENT", "0.05"))
except InvalidOperation:
    raise ImproperlyConfigured("CAMPAIGN_PRICE_PER_SEGMENT must be a decimal number, e.g. 0.05") from None
if not CAMPAIGN_PRICE_PER_SEGMENT.is_finite() or CAMPAIGN_PRICE_PER_SEGMENT < 0:
    raise ImproperlyConfigured("CAMPAIGN_PRICE_PER_SEGMENT must be a number of at least 0")
# Who may be sent marketing (contactcenter.actions.consent.marketing_permitted; service messages are never
# affected, and an opt-out always wins): "opt_in" only patients who opted in explicitly; "existing_patient"
# also patients never asked (consent unknown) with a visit in the last MARKETING_EXISTING_PATIENT_MONTHS.
MARKETING_CONSENT_POLICY = envchoice("MARKETING_CONSENT_POLICY", "opt_in", ("opt_in", "existing_patient"))
MARKETING_EXISTING_PATIENT_MONTHS = envint("MARKETING_EXISTING_PATIENT_MONTHS", 24, minimum=1)
HOSPITAL_NAME = envstr("HOSPITAL_NAME", "Our hospital")
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["CampaignStatusEnum"] = "campaigns.models.campaigns.CampaignStatus"  # type: ignore[index]
HOSPITAL_NAME_ZH = envstr("HOSPITAL_NAME_ZH", "本院")
