"""One env-driven settings module.

Every setting has an embedded default that works on a fresh machine (SQLite and a file-system broker
under the data folder, libvirt's test driver, SeaweedFS on loopback). DEBUG is off unless DJANGO_DEBUG
asks for it. Secrets come from the environment or, when absent, from `secrets.json` in the data folder,
made on the first run; a weak secret from the environment is refused in production mode.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
from datetime import timedelta
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


def env_networks(name: str) -> list[str]:
    """IP networks separated by commas (e.g. "10.20.0.0/24,fd00:20::/64"); none by default."""
    networks = env_list(name, [])
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {network!r} is not a network, e.g. 10.20.0.0/24") from None
    return networks


def _stored_secret(name: str, make) -> str:
    """`name` from the data folder's secrets.json, made with `make()` and saved (0600) the first time.

    Every process of the console (runconsole, web, worker, beat, manage.py) reads the same file; a lock
    makes sure two processes starting together do not each make a different secret.
    """
    path = VAR_DIR / "secrets.json"
    with open(VAR_DIR / "secrets.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = json.loads(path.read_text()) if path.exists() else {}
        if name not in stored:
            stored[name] = make()
            fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as new:
                json.dump(stored, new, indent=2)
            os.replace(f"{path}.new", path)
    return stored[name]


def env_secret(name: str, make, min_length: int | None) -> str:
    """A secret from the environment, else from the data folder's secrets.json (made on first use).

    In production mode a secret set in the environment must be at least `min_length` characters with
    at least 5 different ones (the rule of Django's check security.W009), so a placeholder such as "x"
    or "changeme" never guards a real console. `min_length=None`: a key that is not secret, no check.
    """
    value = os.environ.get(name)
    if not value:
        return _stored_secret(name, make)
    if not DEBUG and min_length and (len(value) < min_length or len(set(value)) < 5):
        raise ImproperlyConfigured(
            f"{name} is too weak for production mode: use at least {min_length} random characters "
            f"(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe({min_length}))'), "
            "or unset it to use the one generated in the data folder."
        )
    return value


DEBUG = env_bool("DJANGO_DEBUG", False)
VAR_DIR = Path(env_str("CLOUDDIGIT_VAR_DIR", str(BASE_DIR / "var"))).resolve()
# Every process (web, worker, beat, manage.py, tests) may be the first to touch the data folder.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", lambda: secrets.token_urlsafe(50), min_length=50)
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
    "axes",
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
    "clouddigit.security.ContentSecurityPolicyMiddleware",
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
    # Last: turns a sign-in refused for too many failures into the lock-out page (or API error).
    "axes.middleware.AxesMiddleware",
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
    # First: refuses a locked-out (username, address) before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# Password guessing (django-axes): this many failures for one username from one address lock that
# pair out until this long after the last one. The lock-out page says when; our audit log records it.
AXES_FAILURE_LIMIT = env_int("CLOUDDIGIT_SIGN_IN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CLOUDDIGIT_SIGN_IN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts during a lock-out do not extend it: a guesser cannot keep a user locked out for ever.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "clouddigit.audit.context.client_ip"  # the audit log's idea of the address
AXES_LOCKOUT_CALLABLE = "clouddigit.lockout.lockout_response"
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

# Production serves what `collectstatic` (run by runconsole) put in STATIC_ROOT, with content-hashed
# names that browsers may cache for a year; DEBUG serves the source folders as they change.
WHITENOISE_USE_FINDERS = DEBUG

# --- Security headers -------------------------------------------------------------------------------
# The operator says the console is reached over https (TLS ends at a proxy in front of gunicorn, which
# must set X-Forwarded-Proto itself and drop any copy a client sent). Only then do cookies need https
# and browsers get HSTS: on plain http://127.0.0.1 either would lock the user out.
TLS = env_bool("CLOUDDIGIT_TLS", False)
SESSION_COOKIE_SECURE = TLS
CSRF_COOKIE_SECURE = TLS
if TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("CLOUDDIGIT_HSTS_SECONDS", 365 * 24 * 3600)
# Content-Security-Policy, one directive per key (Django 6's SECURE_CSP has this shape). Scripts and
# styles come only from our own static files: no inline script, style or event handler anywhere.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

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
# transaction.on_commit. The embedded default broker is kombu's file-system transport (no server), which
# deletes a message when a worker takes it: acks_late does not bring back a task whose worker was killed
# there, and Redis/RabbitMQ redeliver late or twice. The operation's row is therefore the record of work
# to do: a task claims it with a lease, and the reconciler (below) re-queues an operation whose lease has
# run out, on every broker (clouddigit/operations.py).
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
# A worker's claim on an operation lasts this long and is renewed while it runs; a queued operation no
# worker has claimed within the grace period is queued again; after this many claims that ended without
# finishing (the worker died each time), the operation fails with that reason.
OPERATION_LEASE_SECONDS = env_int("CLOUDDIGIT_OPERATION_LEASE_SECONDS", 120)
OPERATION_QUEUE_GRACE_SECONDS = env_int("CLOUDDIGIT_OPERATION_QUEUE_GRACE_SECONDS", 600)
OPERATION_MAX_ATTEMPTS = env_int("CLOUDDIGIT_OPERATION_MAX_ATTEMPTS", 5)
RECONCILE_SECONDS = env_int("CLOUDDIGIT_RECONCILE_SECONDS", 30)
# Cross-region snapshot copies: guest data crosses in content-addressed chunks of this size; a chunk no
# copy uses any more is deleted from the region's object store after the grace period (a copy running
# at the same time re-references it meanwhile, docs/decisions.md).
REPLICATION_CHUNK_BYTES = env_int("CLOUDDIGIT_REPLICATION_CHUNK_BYTES", 4 * 1024 * 1024)
REPLICATION_SEND_THREADS = env_int("CLOUDDIGIT_REPLICATION_SEND_THREADS", 8)  # chunks in flight at once
REPLICATION_CHUNK_GRACE_SECONDS = env_int("CLOUDDIGIT_REPLICATION_CHUNK_GRACE_SECONDS", 3600)
# Cross-region replication monitoring (snapshots/replication_metrics.py): the price of a GiB sent between
# regions, the `/metrics` scrape token (empty: only platform staff may read it) and how long the
# inter-region link check waits for the target's object store.
INTER_REGION_PRICE_PER_GIB = env_str("CLOUDDIGIT_INTER_REGION_PRICE_PER_GIB", "0.02")
METRICS_TOKEN = env_str("CLOUDDIGIT_METRICS_TOKEN", "")
REPLICATION_LINK_TIMEOUT_SECONDS = env_int("CLOUDDIGIT_REPLICATION_LINK_TIMEOUT_SECONDS", 2)
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "clouddigit.beat.heartbeat", "schedule": 30.0},
    "reconcile-operations": {"task": "clouddigit.beat.reconcile", "schedule": float(RECONCILE_SECONDS)},
    "snapshot-sweeper": {"task": "snapshots.beat.sweep", "schedule": 60.0},
    "snapshot-sizes": {"task": "snapshots.beat.measure_all", "schedule": 15 * 60.0},
    "replica-chunks": {"task": "snapshots.beat.collect_chunks", "schedule": 3600.0},
    "policy-tick": {"task": "policies.beat.tick", "schedule": 60.0},
    "policy-drills": {"task": "policies.beat.due_drills", "schedule": 24 * 3600.0},
    "image-scratch-sweep": {"task": "images.beat.sweep", "schedule": 3600.0},
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
        # An access key names the account rather than guarding it (AWS prints its in logs): not checked.
        "s3_access_key": env_secret(prefix + "S3_ACCESS_KEY", lambda: secrets.token_hex(10), min_length=None),
        "s3_secret_key": env_secret(
            prefix + "S3_SECRET_KEY", lambda: secrets.token_urlsafe(30), min_length=16
        ),
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
# Each project's storage quota (snapshots' billed bytes plus custom images' stored bytes) until an admin
# raises it with a ticket; an import must fit its disk's full (virtual) size in what is left.
PROJECT_STORAGE_QUOTA_BYTES = env_int("CLOUDDIGIT_PROJECT_STORAGE_QUOTA_GIB", 1024) * 2**30
# Scratch of image operations (upload files, staging files, open multipart uploads) that no operation in
# flight owns is removed by the hourly sweep once it is this old; an upload idle this long is given up.
IMAGE_SCRATCH_MAX_AGE_HOURS = env_int("CLOUDDIGIT_IMAGE_SCRATCH_MAX_AGE_HOURS", 24)
HYPERVISOR_FREEZE_TIMEOUT_SECONDS = env_int("CLOUDDIGIT_FREEZE_TIMEOUT", 10)
# How long a job waits for another job on the same volume chain (a merge, a checksum, an image copy)
# before it fails saying what holds the chain: long enough for a large merge, never forever.
VOLUME_CHAIN_WAIT_SECONDS = env_int("CLOUDDIGIT_VOLUME_CHAIN_WAIT_SECONDS", 600)
# The largest volume a tenant may create or grow to.
VOLUME_MAX_GIB = env_int("CLOUDDIGIT_VOLUME_MAX_GIB", 16 * 1024)

# --- Console server (runconsole) --------------------------------------------------------------------
CONSOLE_HOST = env_str("CLOUDDIGIT_HOST", "127.0.0.1")
CONSOLE_PORT = env_int("CLOUDDIGIT_PORT", 8000)
# The console as users reach it: links in notifications (email, Slack) start with it.
PUBLIC_URL = env_str("CLOUDDIGIT_PUBLIC_URL", f"http://127.0.0.1:{CONSOLE_PORT}").rstrip("/")
# URLs tenants type (webhooks) reach public addresses only (clouddigit/outbound.py); these networks,
# e.g. "10.20.0.0/24,fd00:20::/64", are let through too, for on-premises receivers. Never the networks
# of the object stores, the database or the hypervisors.
OUTBOUND_ALLOWED_NETWORKS = env_networks("CLOUDDIGIT_OUTBOUND_ALLOWED_NETWORKS")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("CLOUDDIGIT_LOG_LEVEL", "INFO")},
}
