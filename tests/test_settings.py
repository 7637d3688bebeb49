"""Production mode is the default: DEBUG off, secrets generated into the data folder on first run (or
taken from the environment, where a weak one is refused), static files collected and served by
WhiteNoise, plain error pages, security headers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2
SETTINGS_SECRETS = (
    "from django.conf import settings as s; import json; "
    "print(json.dumps([s.DEBUG, s.SECRET_KEY, "
    "{slug: [r['s3_access_key'], r['s3_secret_key']] for slug, r in s.REGIONS.items()}]))"
)


def _manage(args: list[str], env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CLOUDDIGIT_"))}
    clean.update(CLOUDDIGIT_VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def _shell(code: str, env: dict, tmp_path: Path) -> str:
    result = _manage(["shell", "-c", code], env, tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_production_mode_is_the_default_with_secrets_made_on_first_run_and_kept(tmp_path):
    debug, secret_key, s3_keys = json.loads(_shell(SETTINGS_SECRETS, {}, tmp_path))
    assert debug is False
    assert len(secret_key) >= 50 and len(set(secret_key)) >= 5
    dha_access, dha_secret = s3_keys["bd-dha-1"]
    assert len(dha_access) >= 16 and len(dha_secret) >= 30 and s3_keys["bd-ctg-1"] != s3_keys["bd-dha-1"]

    stored = tmp_path / "secrets.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["DJANGO_SECRET_KEY"] == secret_key
    # The next run (and every other process on this data folder) reads the same secrets.
    assert json.loads(_shell(SETTINGS_SECRETS, {}, tmp_path)) == [False, secret_key, s3_keys]

    other = tmp_path / "other"
    other.mkdir()
    assert json.loads(_shell(SETTINGS_SECRETS, {}, other))[1] != secret_key


def test_debug_only_on_request(tmp_path):
    assert json.loads(_shell(SETTINGS_SECRETS, {"DJANGO_DEBUG": "1"}, tmp_path))[0] is True


def test_secrets_from_the_environment_win(tmp_path):
    env = {"DJANGO_SECRET_KEY": STRONG_KEY, "CLOUDDIGIT_BD_DHA_1_S3_SECRET_KEY": "s3-secret-0123456789"}
    debug, secret_key, s3_keys = json.loads(_shell(SETTINGS_SECRETS, env, tmp_path))
    assert secret_key == STRONG_KEY and s3_keys["bd-dha-1"][1] == "s3-secret-0123456789"


def test_weak_secrets_are_refused_in_production_naming_the_variable(tmp_path):
    for name, weak in [
        ("DJANGO_SECRET_KEY", "x"),
        ("DJANGO_SECRET_KEY", "Q" * 80),  # long, but one character
        ("DJANGO_SECRET_KEY", "short-but-varied-0123"),
        ("CLOUDDIGIT_BD_CTG_1_S3_SECRET_KEY", "changeme"),
    ]:
        result = _manage(["check"], {name: weak}, tmp_path)
        assert result.returncode != 0
        assert f"{name} is too weak for production mode" in result.stderr, result.stderr
        assert f"'{weak}'" not in result.stderr  # the refused value is not echoed into logs

    # DEBUG mode is a developer's own machine: anything goes.
    assert _manage(["check"], {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "x"}, tmp_path).returncode == 0


def test_a_bad_boolean_is_named(tmp_path):
    result = _manage(["check"], {"DJANGO_DEBUG": "maybe"}, tmp_path)
    assert "DJANGO_DEBUG='maybe'" in result.stderr


def test_production_mode_serves_collected_static_files(tmp_path):
    collected = _manage(["collectstatic", "--noinput"], {}, tmp_path)
    assert collected.returncode == 0, collected.stderr
    url, status, cache = _shell(
        "from django.templatetags.static import static; from django.test import Client; "
        "url = static('vendor/htmx-2.0.11.min.js'); r = Client().get(url); "
        "print(url, r.status_code, r.headers.get('Cache-Control'))",
        {},
        tmp_path,
    ).split(maxsplit=2)
    assert url.startswith("/static/vendor/htmx-2.0.11.min.") and url != "/static/vendor/htmx-2.0.11.min.js"
    assert status == "200" and "max-age" in cache


def test_a_bad_outbound_allowlist_is_named(tmp_path):
    result = _manage(["check"], {"CLOUDDIGIT_OUTBOUND_ALLOWED_NETWORKS": "10.20.0.0/24, nonsense"}, tmp_path)
    assert result.returncode != 0
    assert "CLOUDDIGIT_OUTBOUND_ALLOWED_NETWORKS: 'nonsense' is not a network" in result.stderr


PROBE = (
    "from django.test import Client; import json; c = Client(raise_request_exception=False); "
    "r = c.get('/no-such-page/'); l = c.get('/login/'); "
    "print(json.dumps([r.status_code, r.content.decode(), dict(l.headers), "
    "dict(c.get('/login/', secure=True, headers={'X-Forwarded-Proto': 'https'}).headers)]))"
)


def test_error_pages_are_plain_and_headers_are_set_in_production(tmp_path):
    status, body, headers, _ = json.loads(_shell(PROBE, {}, tmp_path))
    assert status == 404
    # Django's technical 404 lists every URL pattern and the settings file; production shows none.
    for leak in ("URLconf", "api/v1/", "settings", "Using the"):
        assert leak not in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert "Strict-Transport-Security" not in headers  # plain http on 127.0.0.1: never HSTS
    assert "Secure" not in headers.get("Set-Cookie", "")


def test_hsts_and_secure_cookies_when_served_over_tls(tmp_path):
    *_, plain, behind_tls_proxy = json.loads(_shell(PROBE, {"CLOUDDIGIT_TLS": "1"}, tmp_path))
    assert "Strict-Transport-Security" not in plain  # not a secure request: no HSTS
    assert behind_tls_proxy["Strict-Transport-Security"].startswith("max-age=31536000")
