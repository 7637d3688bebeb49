"""One env-driven settings module.

Every setting has an embedded default that works on a fresh machine (SQLite and a file-system broker
under the data folder, libvirt's test driver, SeaweedFS on loopback). With DEBUG off, secrets must come
from the environment: the process refuses to start without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1/0, true/false, yes/no or on/off")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, dev_default: str) -> str:
    """A secret: the embedded default only serves DEBUG mode."""
    value = os.environ.get(name)
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(
        f"{name} must be set when DEBUG is off (production mode has no default secrets)"
    )


DEBUG = env_bool("DJANGO_DEBUG", True)
VAR_DIR = Path(env_str("CLOUDDIGIT_VAR_DIR", str(BASE_DIR / "var"))).resolve()
# Every process (web, worker, beat, manage.py, tests) may be the first to touch the data folder.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "dev-only-insecure-key-for-the-embedded-console")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_filters",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "clouddigit",
    "clouddigit.compute",
    "clouddigit.audit",
    "iam",
    "snapshots",
    "policies",
    "images",
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
    "django_htmx.middleware.HtmxMiddleware",
    "clouddigit.context.ScopeMiddleware",
    "clouddigit.audit.context.SourceIPMiddleware",
]
# How many proxies in front of the console append to X-Forwarded-For (0: trust REMOTE_ADDR only).
TRUSTED_PROXY_COUNT = env_int("CLOUDDIGIT_TRUSTED_PROXY_COUNT", 0)

ROOT_URLCONF = "clouddigit.urls"
WSGI_APPLICATION = "clouddigit.wsgi.application"

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
                "clouddigit.context.scope",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'clouddigit.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and beat read while one of them writes; the busy timeout
    # makes a writer wait for the lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not :memory:, so that a worker process in an integration test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-clouddigit.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "compute:vm-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

WHITENOISE_USE_FINDERS = DEBUG
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

# --- REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes an anonymous call a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "clouddigit.api.base.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["clouddigit.api.base.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "clouddigit.api.schema.AutoSchema",
    # JSON is negotiated by Accept alone: `?format=` is not DRF's renderer switch here, so it cannot
    # clash with a filter (it made `?format=qcow2` a 404).
    "URL_FORMAT_OVERRIDE": None,
    "EXCEPTION_HANDLER": "clouddigit.api.errors.handle",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cloud Digit Snapshots & Custom Images API",
    "DESCRIPTION": "Authenticate with `Authorization: Token <token>` (POST /api/v1/auth/token/ or "
    '`manage.py drf_create_token USER`). Errors are {"code": ..., "message": ...} (plus "field" for '
    "bad input): the `Error` schema.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's files come from the drf-spectacular-sidecar package: nothing loads from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Names for the choice sets that several fields share (else hashed names and a warning).
    "ENUM_NAME_OVERRIDES": {
        "SnapshotStateEnum": "snapshots.models.Snapshot.State",
        "KindEnum": "snapshots.models.Snapshot.Kind",
        "ConsistencyEnum": "snapshots.models.Snapshot.Consistency",
    },
}

# --- Celery -----------------------------------------------------------------------------------------
# Queues: `hypervisor.<region>` (libvirt + qemu-img, one worker per host in production), `replication`
# (object store copies), `default` (reports, notifications, metrics). Tasks are queued with
# transaction.on_commit and acknowledged late, so a worker killed mid-task leaves the message.
# The embedded default broker is kombu's file-system transport: a broker that needs no server.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "broker" / "queue"),
        "data_folder_out": str(VAR_DIR / "broker" / "queue"),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "clouddigit.tasks.heartbeat", "schedule": 30.0},
    "snapshot-sweeper": {"task": "snapshots.tasks.sweep", "schedule": 60.0},
    "snapshot-sizes": {"task": "snapshots.tasks.measure_all", "schedule": 15 * 60.0},
    "policy-tick": {"task": "policies.tasks.tick", "schedule": 60.0},
    "policy-drills": {"task": "policies.tasks.due_drills", "schedule": 24 * 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Regions, hosts, backends -----------------------------------------------------------------------
HOSTS_XML_DIR = BASE_DIR / "clouddigit" / "backends" / "hosts"
S3_PORT_BASE = env_int("CLOUDDIGIT_S3_PORT_BASE", 18300)


def _region(slug: str, name: str, index: int) -> dict:
    """One region's backends; every value can be overridden with CLOUDDIGIT_<SLUG>_<KEY>."""
    prefix = "CLOUDDIGIT_" + slug.upper().replace("-", "_") + "_"
    default_uris = [f"test://{path}" for path in sorted(HOSTS_XML_DIR.glob(f"{slug}-*.xml"))]
    return {
        "slug": slug,
        "name": name,
        "libvirt_uris": env_list(prefix + "LIBVIRT_URIS", default_uris),
        "volume_dir": env_str(prefix + "VOLUME_DIR", str(VAR_DIR / "volumes" / slug)),
        "s3_endpoint": env_str(prefix + "S3_ENDPOINT", f"http://127.0.0.1:{S3_PORT_BASE + 10 * index}"),
        "s3_bucket": env_str(prefix + "S3_BUCKET", f"clouddigit-{slug}"),
        "s3_access_key": env_secret(prefix + "S3_ACCESS_KEY", "clouddigit-dev"),
        "s3_secret_key": env_secret(prefix + "S3_SECRET_KEY", f"clouddigit-dev-secret-{slug}"),
        # Embedded SeaweedFS only: where it keeps its data, and the first of its ten loopback ports.
        "embedded_s3_dir": str(VAR_DIR / "s3" / slug),
        "embedded_s3_port_base": S3_PORT_BASE + 10 * index,
    }


REGIONS = {
    region["slug"]: region
    for region in [
        _region("bd-dha-1", "Dhaka", 0),
        _region("bd-ctg-1", "Chattogram", 1),
    ]
}
# Where an API call that names no region creates things.
DEFAULT_REGION = env_str("CLOUDDIGIT_DEFAULT_REGION", next(iter(REGIONS)))
CELERY_TASK_QUEUES = [Queue("default"), Queue("replication")] + [
    Queue(f"hypervisor.{slug}") for slug in REGIONS
]
# Snapshot policies: starts of one slot spread over this window; a slot missed while the scheduler was
# down is caught up once within this many hours, else recorded as missed.
POLICY_SPREAD_MINUTES = env_int("CLOUDDIGIT_POLICY_SPREAD_MINUTES", 10)
POLICY_CATCH_UP_HOURS = env_int("CLOUDDIGIT_POLICY_CATCH_UP_HOURS", 6)
# Custom images: the largest upload accepted (the file is streamed to disk, never held in memory).
IMAGE_MAX_UPLOAD_BYTES = env_int("CLOUDDIGIT_IMAGE_MAX_UPLOAD_GIB", 64) * 2**30
# ... and the largest guest disk an image may declare (a header can claim exabytes in a few bytes).
IMAGE_MAX_VIRTUAL_BYTES = env_int("CLOUDDIGIT_IMAGE_MAX_DISK_GIB", 16 * 1024) * 2**30
HYPERVISOR_FREEZE_TIMEOUT_SECONDS = env_int("CLOUDDIGIT_FREEZE_TIMEOUT", 10)

# --- Console server (runconsole) --------------------------------------------------------------------
CONSOLE_HOST = env_str("CLOUDDIGIT_HOST", "127.0.0.1")
CONSOLE_PORT = env_int("CLOUDDIGIT_PORT", 8000)
# The console as users reach it: links in notifications (email, Slack) start with it.
PUBLIC_URL = env_str("CLOUDDIGIT_PUBLIC_URL", f"http://127.0.0.1:{CONSOLE_PORT}").rstrip("/")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("CLOUDDIGIT_LOG_LEVEL", "INFO")},
}
