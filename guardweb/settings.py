"""Guardweb settings: one file, driven by environment variables.

Every variable is listed in docker/.env.example. With DATABASE_URL / REDIS_URL
unset, the embedded PostgreSQL and Redis under GUARDWEB_DATA_DIR are started (or
found) here, so every entry point (web, worker, manage.py, tests) shares them.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from guardweb import embedded
from guardweb.database_url import DatabaseUrlError, database_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default).strip().lower()
    if value not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value in {"true", "1", "yes"}


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None


def envsecret(name: str, default: str | None = None) -> str | None:
    """Read NAME, or the contents of the file named by NAME_FILE (docker secrets)."""
    path = os.getenv(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.getenv(name, default)


def envnetworks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of addresses or networks (10.0.0.0/8, ::1)."""
    networks = []
    for item in os.getenv(name, "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{name}: {item.strip()!r} is not an address or network") from None
    return networks


DEBUG = envbool("GUARDWEB_DEBUG", "false")
TESTING = "pytest" in sys.modules or envbool("GUARDWEB_TESTING", "false")
DATA_DIR = Path(os.getenv("GUARDWEB_DATA_DIR", str(BASE_DIR / "var"))).resolve()
ARTIFACTS_DIR = DATA_DIR / "artifacts"
MODELS_DIR = DATA_DIR / "models"

_secret = envsecret("SECRET_KEY")
if not _secret:
    if not (DEBUG or TESTING or envbool("GUARDWEB_DEMO", "true")):
        raise embedded.StartupError("SECRET_KEY is required when GUARDWEB_DEMO=false")
    # Demo installs get a stable random key kept in the data dir.
    embedded.check_writable(DATA_DIR)
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(os.urandom(32).hex())
        key_file.chmod(0o600)
    _secret = key_file.read_text().strip()
SECRET_KEY = _secret

ALLOWED_HOSTS = os.getenv("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
SECURE_COOKIES = envbool("GUARDWEB_SECURE_COOKIES", "false")
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
# HTTPS hardening follows GUARDWEB_SECURE_COOKIES (= "this site is served over
# HTTPS"); each part can be turned off on its own. HSTS is hard to undo once
# browsers have cached it, so its length is a setting (0 disables it).
SECURE_SSL_REDIRECT = envbool("GUARDWEB_SSL_REDIRECT", str(SECURE_COOKIES))
# Load balancers probe these over plain HTTP; a redirect would read as "down".
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# /metrics is an operator endpoint (it names constitutions): restrict it with a
# bearer token (Prometheus' `authorization: credentials: ...`), an allow-list of
# client addresses, or both. Neither set: open, as Prometheus scrapes by default.
METRICS_TOKEN = envsecret("GUARDWEB_METRICS_TOKEN") or ""
METRICS_ALLOW = envnetworks("GUARDWEB_METRICS_ALLOW")
SECURE_HSTS_SECONDS = envint("GUARDWEB_HSTS_SECONDS", "31536000" if SECURE_COOKIES else "0")
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("GUARDWEB_HSTS_INCLUDE_SUBDOMAINS", "true")
SECURE_HSTS_PRELOAD = envbool("GUARDWEB_HSTS_PRELOAD", "false")
# Joining the browsers' preload list is the domain owner's decision (and close to
# permanent), not a default: without it, check --deploy's reminder is silenced.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a TLS-terminating proxy: GUARDWEB_PROXY_SSL_HEADER=X-Forwarded-Proto makes
# "X-Forwarded-Proto: https" mean the request was secure. Only set it when the
# proxy always sets (and strips client copies of) that header.
_proxy_header = os.getenv("GUARDWEB_PROXY_SSL_HEADER", "").strip()
if _proxy_header:
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_header.upper().replace("-", "_"),
        "https",
    )
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "daphne",  # its runserver is ASGI; production uses uvicorn (manage.py serve)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "guardweb",
    "constitutions",
    "classifiers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "guardweb.urls"
ASGI_APPLICATION = "guardweb.asgi.application"
WSGI_APPLICATION = None

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
                "guardweb.context.roles",
                "guardweb.context.service_notice",
            ],
        },
    },
]

# --- Services -----------------------------------------------------------------

DATABASE_URL = os.getenv("DATABASE_URL", "")
_db_options: dict[str, Any] = {}
if DATABASE_URL:
    try:
        _db_params = database_settings(DATABASE_URL)
    except DatabaseUrlError as exc:
        raise embedded.StartupError(str(exc)) from None
    _db_options = _db_params.pop("OPTIONS")
else:
    _db_params = embedded.ensure_postgres(DATA_DIR)
# Another database on the same server, e.g. a test database for a child worker.
if os.getenv("GUARDWEB_DB_NAME"):
    _db_params["NAME"] = os.environ["GUARDWEB_DB_NAME"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        **_db_params,
        "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", "0"),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "connect_timeout": 5,
            **({"pool": {"min_size": 1, "max_size": 20, "timeout": 10}}
               if envbool("GUARDWEB_DB_POOL", "false") else {}),
            **_db_options,
        },  # the URL's ?options win
        # Per-process test database: concurrent runs on one server never collide.
        "TEST": {"NAME": os.getenv("GUARDWEB_TEST_DB_NAME") or f"test_guardweb_{os.getpid()}"},
    }
}

REDIS_URL = os.getenv("REDIS_URL", "") or embedded.ensure_redis(DATA_DIR)
# Separates concurrent users of one Redis (e.g. two test runs on CI's shared server).
# Test runs default to a per-process prefix so they never see each other's messages.
REDIS_PREFIX = os.getenv(
    "GUARDWEB_REDIS_PREFIX", f"guardweb-test-{os.getpid()}" if TESTING else "guardweb"
)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults to a 5 s socket timeout, the same as the layer's
            # 5 s blocking pop, so idle consumers would time out; give reads room.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": f"{REDIS_PREFIX}:channels",
            "capacity": 2000,
            "expiry": 15,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
    # A task whose worker died is redelivered after this long (acks_late tasks).
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "3600"),
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "classifiers.tasks.generate_dataset": {"queue": "gpu"},
    "classifiers.tasks.train_classifier": {"queue": "gpu"},
    "classifiers.tasks.calibrate_cascade": {"queue": "gpu"},
    "classifiers.tasks.audit_labels": {"queue": "gpu"},
    "classifiers.tasks.evaluate_model": {"queue": "gpu"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# A running job whose worker has not beaten for this long is marked failed (its
# worker was killed); the worker beats a few times per timeout.
JOB_HEARTBEAT_TIMEOUT = envint("GUARDWEB_JOB_HEARTBEAT_TIMEOUT", "90")
JOB_HEARTBEAT_SECONDS = min(10.0, JOB_HEARTBEAT_TIMEOUT / 3)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
    }
}

# --- Auth, i18n, static ---------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns when it is absent
WHITENOISE_USE_FINDERS = True  # serve straight from the apps; no collectstatic step
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Models ----------------------------------------------------------------------

# Any local Hugging Face model directory may replace the packaged defaults.
GENERATOR_MODEL_DIR = os.getenv("GUARDWEB_GENERATOR_DIR", "")
ENCODER_MODEL_DIR = os.getenv("GUARDWEB_ENCODER_DIR", "")
TORCH_THREADS = envint("GUARDWEB_TORCH_THREADS", "0")  # 0 = torch's default
# Concurrent local generations decoded together, one forward per step (continuous
# batching, classifiers/ml/serving/batching.py); 1 turns batching off.
GENERATION_BATCH = envint("GUARDWEB_GENERATION_BATCH", "8")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
