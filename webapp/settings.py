"""Django settings, read from the environment with defaults that work on one machine.

Every setting a deployment changes is an environment variable; the README lists them.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn postgres://user:pass@host:port/name into a Django DATABASES entry (psycopg 3)."""
    parts = urlparse(url)
    query = parse_qs(parts.query)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, got {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "gft_studio",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        # ?host=/path/to/socket-dir selects a Unix socket (the embedded server uses one).
        "HOST": query.get("host", [parts.hostname or "127.0.0.1"])[0],
        "PORT": str(parts.port or 5432),
        # Connection reuse: one connection per thread kept for a minute, checked before reuse.
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_gft_studio")},
    }


DEBUG = env_bool("DEBUG", False)
# The value .env.example ships with: a deployment that copied the file without editing it would
# sign sessions with a key everyone knows, so it is refused like a missing one.
PLACEHOLDER_SECRET_KEYS = frozenset({"change-me-to-a-long-random-string"})
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
if SECRET_KEY in PLACEHOLDER_SECRET_KEYS:
    raise ImproperlyConfigured(
        "SECRET_KEY is the placeholder from .env.example. Set a long random value, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(48))'.")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is not set. Set it, or set DEBUG=1 for a local development server.")
    SECRET_KEY = "dev-only-insecure-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# Behind TLS. All off by default, so a local http://127.0.0.1 keeps working.
# SECURE_COOKIES=1: session and CSRF cookies only over https.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
# HSTS_SECONDS > 0: https responses tell browsers to use https only, for this long; set it
# only once https works. SECURE_SSL_REDIRECT=1: http requests are redirected to https (the
# health check stays reachable over http for load balancers and the launcher).
SECURE_HSTS_SECONDS = int(os.environ.get("HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^accounts/healthz/$"]
# TRUST_X_FORWARDED_PROTO=1: the proxy in front terminates TLS and sets X-Forwarded-Proto (only
# safe when clients cannot reach the app except through that proxy).
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gft_studio")
DATABASES = {"default": database_from_url(DATABASE_URL)}
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)

# Where datasets, checkpoints, final models and run logs live; workers must see the same path.
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", BASE_DIR / "var" / "artifacts")).resolve()
MEDIA_ROOT = ARTIFACT_ROOT
MEDIA_URL = "/media/"
# A run may only load a model from below one of these folders (plus the built-in tiny model).
MODEL_ROOTS = [Path(p).resolve() for p in env_list("MODEL_ROOTS", str(BASE_DIR / "var" / "models"))]
UPLOAD_MAX_BYTES = int(os.environ.get("UPLOAD_MAX_BYTES", str(2 * 1024**3)))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024**2  # larger uploads stream to a temporary file
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
# A run whose worker has not sent a heartbeat for this long is marked failed by housekeeping.
RUN_HEARTBEAT_TIMEOUT_S = int(os.environ.get("RUN_HEARTBEAT_TIMEOUT_S", "45"))
# Seconds between two samples of a training run's system metrics (workers/system.py); 0: none.
SYSTEM_METRICS_INTERVAL_S = float(os.environ.get("SYSTEM_METRICS_INTERVAL_S", "10"))
# Celery queues: runs train on TRAINING_QUEUES (the first is the default); light work goes to DEFAULT_QUEUE.
TRAINING_QUEUES = tuple(env_list("TRAINING_QUEUES", "gpu"))
DEFAULT_QUEUE = os.environ.get("DEFAULT_QUEUE", "default")
# Alerts (webapp.alerts): webhook hosts allowed even though they resolve to a private or loopback
# address (refused otherwise: a rule author must not make the server call its own network), and
# e-mail through Django's mail settings.
ALERT_WEBHOOK_ALLOW_HOSTS = env_list("ALERT_WEBHOOK_ALLOW_HOSTS", "")
ALERT_EMAIL = env_bool("ALERT_EMAIL", True)
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "gft-studio@localhost")
# "Test this reward" stops scoring after this many seconds and shows what it scored so far.
REWARD_TEST_MAX_S = float(os.environ.get("REWARD_TEST_MAX_S", "120"))
# An open live stream (SSE) checks this often that its user is still logged in and in the team.
SSE_RECHECK_S = float(os.environ.get("SSE_RECHECK_S", "5"))
# Reference results (the GFT paper's Table 1, gft_paper_table1.csv) and the benchmark files of the presets.
REFERENCE_DATA = Path(os.environ.get("REFERENCE_DATA", BASE_DIR.parent / "shared" / "data" / "reference"))
BENCHMARK_DATA = Path(os.environ.get("BENCHMARK_DATA", BASE_DIR.parent / "shared" / "data"))
MAX_GPUS_PER_RUN = int(os.environ.get("MAX_GPUS_PER_RUN", "8"))  # the launch form's and API's bound on num_gpus
# Per-team quotas (webapp/accounts/quotas.py), 0 = unlimited: runs queued + running at once, and
# bytes stored (dataset files + the run artifacts the workers recorded: checkpoints, final models).
TEAM_MAX_ACTIVE_RUNS = int(os.environ.get("TEAM_MAX_ACTIVE_RUNS", "20"))
TEAM_MAX_STORAGE_BYTES = int(os.environ.get("TEAM_MAX_STORAGE_BYTES", str(500 * 1024**3)))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc files served locally: /api/docs/ works offline
    "axes",
    "webapp.accounts",
    "webapp.datasets",
    "webapp.rewards",
    "webapp.runs",
    "webapp.dashboards",
    "webapp.evaluations",
    "webapp.pipelines",
    "webapp.alerts",
    "webapp.sweeps",
    "webapp.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "webapp.accounts.middleware.CurrentTeamMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "webapp.urls"
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
                "webapp.accounts.context_processors.teams",
            ],
        },
    },
]
ASGI_APPLICATION = "webapp.asgi.application"
WSGI_APPLICATION = "webapp.wsgi.application"

# The test suite (tests/pytest_env.py, and the servers it starts) hashes with MD5, as Django's docs
# advise for tests: PBKDF2's default iterations cost ~0.5 s per user created and per login.
if os.environ.get("TEST_FAST_PASSWORD_HASHER") == "1":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Login throttling (django-axes) for the login page and the admin: after LOGIN_FAILURE_LIMIT
# failures for one username from one address, that pair is refused for LOGIN_COOLOFF_MINUTES
# (429 and templates/accounts/locked_out.html). The API has no password login; its own
# limits are the DRF throttles below.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # checks the lockout, then the next backend logs in
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "runs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# Set STATIC_ROOT (and run collectstatic) in containers; locally WhiteNoise serves from the finders.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
# plotly.js ships inside the plotly wheel; serving it from there keeps the product offline-capable.
STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder",
                       "django.contrib.staticfiles.finders.AppDirectoriesFinder",
                       "webapp.staticstorage.PlotlyFinder"]
if STATIC_ROOT:
    # Hashed names, gzip + brotli copies, immutable cache headers (webapp/staticstorage.py).
    STORAGES = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "staticfiles": {"BACKEND": "webapp.staticstorage.StaticStorage"}}
    WHITENOISE_KEEP_ONLY_HASHED_FILES = True  # half the files to compress; pages name the hashed ones
else:
    # Tests and a bare `runserver`/uvicorn without collectstatic: served from the app folders as they
    # are (uncompressed, max-age 60 s).
    WHITENOISE_USE_FINDERS = True
# /favicon.ico and other files browsers ask for at the site's root.
WHITENOISE_ROOT = BASE_DIR / "webapp" / "static_root"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.accounts.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "webapp.accounts.auth.TokenScopePermission",  # read-only tokens: safe methods only
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webapp.api.pagination.StrictLimitOffsetPagination",
    # JSON bodies only (a form body is a 415): every write's schema is one JSON object. The two file
    # uploads (dataset create, teacher import) add multipart: webapp.api.parsers.UPLOAD_PARSERS.
    "DEFAULT_PARSER_CLASSES": ["webapp.api.parsers.LimitedJSONParser"],  # nested deeper than API_MAX_JSON_DEPTH: 400
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "PAGE_SIZE": 50,
    # Per client: anonymous by address, a signed-in user over all their requests, and each API
    # token on its own (webapp/accounts/throttling.py). Over the rate: 429 with Retry-After.
    "DEFAULT_THROTTLE_CLASSES": [
        "webapp.accounts.throttling.AnonThrottle",
        "webapp.accounts.throttling.UserThrottle",
        "webapp.accounts.throttling.TokenThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_RATE_ANON", "60/min"),
        "user": os.environ.get("API_RATE_USER", "1200/min"),
        "token": os.environ.get("API_RATE_TOKEN", "600/min"),
    },
}
# Throttle counters live in Redis, so every web process counts the same requests.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                 "KEY_PREFIX": "throttle"},
}
API_MAX_JSON_DEPTH = 32  # nesting levels of a JSON request body (reward specs need a handful)
SPECTACULAR_SETTINGS = {
    "TITLE": "GFT Studio API", "VERSION": "1", "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components: files are binary there, read-only fields absent.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "webapp.api.schema.add_error_responses"],
    "ENUM_NAME_OVERRIDES": {"RunStatusEnum": "webapp.runs.models.RunStatus",
                            "DatasetStatusEnum": "webapp.datasets.models.Dataset.Status",
                            "SweepStatusEnum": "webapp.sweeps.models.SweepStatus",
                            "SweepStrategyEnum": "webapp.sweeps.models.Sweep.Strategy"},
    # No CDN: the UI's files come from drf-spectacular-sidecar through the static files, and the
    # online spec validator (swagger.io) is off.
    "SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
