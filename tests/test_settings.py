"""Settings come from the environment; bad values stop the process at start-up with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'layer': s.CHANNEL_LAYERS['default']['BACKEND'], "
    "'runner': s.TASK_RUNNER, 'simulator': s.SIMULATOR_ENABLED}))"
)


def start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "TASK_RUNNER", "SECRET_KEY", "SIMULATOR_ENABLED"}
    }
    clean.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_nothing_set_is_the_embedded_default(tmp_path: Path) -> None:
    result = start({}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "engine": "django.db.backends.sqlite3",
        "layer": "channels.layers.InMemoryChannelLayer",
        "runner": "inprocess",
        "simulator": True,
    }
    assert (tmp_path / "secret_key").exists()


def test_database_and_redis_urls_switch_to_production_mode(tmp_path: Path) -> None:
    result = start(
        {
            "DATABASE_URL": "postgres://u:p@db.internal:5432/h",
            "REDIS_URL": "redis://cache:6379/0",
            "SECRET_KEY": "x" * 50,
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "engine": "django.db.backends.postgresql",
        "layer": "channels_redis.core.RedisChannelLayer",
        "runner": "celery",
        "simulator": False,
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DATABASE_URL": "mysql://u:p@h/db", "SECRET_KEY": "k"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u:p@h/db"}, "SECRET_KEY"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL"),
        ({"HOSPITAL_TIME_ZONE": "Mars/Olympus_Mons"}, "HOSPITAL_TIME_ZONE"),
        ({"PHONE_DEFAULT_REGION": "XX"}, "PHONE_DEFAULT_REGION"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"TASK_RUNNER": "cron"}, "TASK_RUNNER"),
        ({"TASK_RUNNER": "celery"}, "TASK_RUNNER=celery needs REDIS_URL"),
        ({"DISPATCH_INTERVAL_SECONDS": "0"}, "DISPATCH_INTERVAL_SECONDS"),
        ({"PUBLIC_BASE_URL": "hospital.example"}, "PUBLIC_BASE_URL"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_variable(env: dict[str, str], named: str, tmp_path: Path) -> None:
    result = start(env, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_the_suite_itself_runs_on_postgresql_and_redis(db) -> None:
    from django.conf import settings
    from django.db import connection

    assert connection.vendor == "postgresql"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
