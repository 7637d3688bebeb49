"""Production mode (DEBUG off): no default secrets, static files collected and served by WhiteNoise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "DJANGO_SECRET_KEY": "test-secret",
    "CLOUDDIGIT_BD_DHA_1_S3_ACCESS_KEY": "a",
    "CLOUDDIGIT_BD_DHA_1_S3_SECRET_KEY": "b",
    "CLOUDDIGIT_BD_CTG_1_S3_ACCESS_KEY": "c",
    "CLOUDDIGIT_BD_CTG_1_S3_SECRET_KEY": "d",
}


def _manage(args: list[str], env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CLOUDDIGIT_"))}
    clean.update(CLOUDDIGIT_VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_production_mode_refuses_to_start_without_secrets(tmp_path):
    result = _manage(["check"], {"DJANGO_DEBUG": "0"}, tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DEBUG is off" in result.stderr

    partial = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x"}
    result = _manage(["check"], partial, tmp_path)
    assert "CLOUDDIGIT_BD_DHA_1_S3_ACCESS_KEY must be set" in result.stderr


def test_a_bad_boolean_is_named(tmp_path):
    result = _manage(["check"], {"DJANGO_DEBUG": "maybe"}, tmp_path)
    assert "DJANGO_DEBUG='maybe'" in result.stderr


def test_production_mode_serves_collected_static_files(tmp_path):
    env = {"DJANGO_DEBUG": "0", **SECRETS}
    collected = _manage(["collectstatic", "--noinput"], env, tmp_path)
    assert collected.returncode == 0, collected.stderr
    fetch = _manage(
        [
            "shell",
            "-c",
            "from django.templatetags.static import static; from django.test import Client; "
            "url = static('vendor/htmx-2.0.11.min.js'); r = Client().get(url); "
            "print(url, r.status_code, r.headers.get('Cache-Control'))",
        ],
        env,
        tmp_path,
    )
    assert fetch.returncode == 0, fetch.stderr
    url, status, cache = fetch.stdout.strip().splitlines()[-1].split(maxsplit=2)
    assert url.startswith("/static/vendor/htmx-2.0.11.min.") and url != "/static/vendor/htmx-2.0.11.min.js"
    assert status == "200" and "max-age" in cache


def test_a_bad_outbound_allowlist_is_named(tmp_path):
    result = _manage(["check"], {"CLOUDDIGIT_OUTBOUND_ALLOWED_NETWORKS": "10.20.0.0/24, nonsense"}, tmp_path)
    assert result.returncode != 0
    assert "CLOUDDIGIT_OUTBOUND_ALLOWED_NETWORKS: 'nonsense' is not a network" in result.stderr
