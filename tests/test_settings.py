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
        "layer": "contactcenter.layers.ResilientRedisChannelLayer",
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
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "contactcenter.layers.ResilientRedisChannelLayer"


# --- Production security (issue 13) ----------------------------------------------------------------------------

# Everything the test run itself sets (tests/services.py) or that settings put into the environment.
NOT_INHERITED = {
    "DATABASE_URL",
    "REDIS_URL",
    "TASK_RUNNER",
    "SECRET_KEY",
    "SIMULATOR_ENABLED",
    "TWILIO_TRANSPORT",
    "EMAIL_TRANSPORT",
    "PUBLIC_BASE_URL",
    "ALLOWED_HOSTS",
    "TWILIO_AUTH_TOKEN",
    "WEBCHAT_IDENTITY_SECRET",
    "HIS_API_TOKEN",
    "BEHIND_TLS_PROXY",
    "SIMULATOR_ALLOW_REMOTE",
    # The browser tests' harness sets this for the whole session (Playwright's loop); production never does.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}
PRODUCTION = {
    "DATABASE_URL": "postgres://hospital:pw@db.internal:5432/hospital",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "Zq8v3LrT0w-6bXy1mK9pQeN4sUa7dHc2fJgR5tVzW0oIkE_lMnBx8yCuPqA3rS",
    "ALLOWED_HOSTS": "contact.example-hospital.cn",
    "CSRF_TRUSTED_ORIGINS": "https://contact.example-hospital.cn",
    "PUBLIC_BASE_URL": "https://contact.example-hospital.cn",
    "BEHIND_TLS_PROXY": "true",
}


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    clean.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_production_variables(tmp_path: Path) -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert not list(tmp_path.iterdir())  # production generates no secrets of its own


def test_check_deploy_warns_without_tls(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "BEHIND_TLS_PROXY"}

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, tmp_path)

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, check


SECURITY_PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'ssl_redirect': s.SECURE_SSL_REDIRECT, 'session_secure': s.SESSION_COOKIE_SECURE, "
    "'csrf_secure': s.CSRF_COOKIE_SECURE, 'hsts': s.SECURE_HSTS_SECONDS, 'simulator': s.SIMULATOR_ENABLED}))"
)


def test_https_settings_are_on_behind_the_tls_proxy_and_off_embedded(tmp_path: Path) -> None:
    production = run(["-c", SECURITY_PROBE], PRODUCTION, tmp_path)
    embedded = run(["-c", SECURITY_PROBE], {}, tmp_path)

    assert json.loads(production.stdout) == {
        "ssl_redirect": True,
        "session_secure": True,
        "csrf_secure": True,
        "hsts": 31_536_000,
        "simulator": False,
    }
    assert json.loads(embedded.stdout) == {
        "ssl_redirect": False,
        "session_secure": False,
        "csrf_secure": False,
        "hsts": 0,
        "simulator": True,
    }


SECRETS_PROBE = (
    "import json, os, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'SECRET_KEY': s.SECRET_KEY, 'HIS_API_TOKEN': s.HIS_API_TOKEN, "
    "'TWILIO_AUTH_TOKEN': os.environ['TWILIO_AUTH_TOKEN'], 'WEBCHAT_IDENTITY_SECRET': os.environ['WEBCHAT_IDENTITY_SECRET']}))"
)
FILES = {
    "SECRET_KEY": "secret_key",
    "HIS_API_TOKEN": "his_api_token",
    "TWILIO_AUTH_TOKEN": "simulator_twilio_token",
    "WEBCHAT_IDENTITY_SECRET": "webchat_identity_secret",
}
SHIPPED = {"embedded-simulator-token", "embedded-demo-identity-secret", "embedded-demo-his-token"}


def test_embedded_secrets_are_generated_per_installation(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first = json.loads(run(["-c", SECRETS_PROBE], {}, one).stdout)
    again = json.loads(run(["-c", SECRETS_PROBE], {}, one).stdout)
    other = json.loads(run(["-c", SECRETS_PROBE], {}, two).stdout)

    assert first == again  # kept across restarts
    for name, file in FILES.items():
        assert first[name] != other[name], name
        assert first[name] not in SHIPPED
        assert len(first[name]) >= 50
        assert (one / file).read_text().strip() == first[name]
        assert (one / file).stat().st_mode & 0o777 == 0o600, file


def test_secrets_in_the_environment_win_over_generated_ones(tmp_path: Path) -> None:
    env = {"HIS_API_TOKEN": "his-from-env", "TWILIO_AUTH_TOKEN": "tw-from-env", "WEBCHAT_IDENTITY_SECRET": "wc"}

    values = json.loads(run(["-c", SECRETS_PROBE], env, tmp_path).stdout)

    assert (values["HIS_API_TOKEN"], values["TWILIO_AUTH_TOKEN"], values["WEBCHAT_IDENTITY_SECRET"]) == (
        "his-from-env",
        "tw-from-env",
        "wc",
    )
    assert sorted(f.name for f in tmp_path.iterdir()) == ["secret_key"]  # nothing generated for the others


@pytest.mark.parametrize(
    "env",
    [
        {"ALLOWED_HOSTS": "*"},
        {"ALLOWED_HOSTS": "0.0.0.0"},
        {"ALLOWED_HOSTS": "127.0.0.1,192.168.1.20"},
        {"ALLOWED_HOSTS": ".example-hospital.cn"},
        {"BEHIND_TLS_PROXY": "true"},
        {**PRODUCTION, "SIMULATOR_ENABLED": "true"},
    ],
)
def test_the_simulator_is_refused_on_a_server_others_can_reach(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["-c", PROBE], env, tmp_path)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SIMULATOR_ALLOW_REMOTE" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"ALLOWED_HOSTS": "127.0.0.1,localhost,[::1],testserver"},
        {"ALLOWED_HOSTS": "*", "SIMULATOR_ALLOW_REMOTE": "true"},
        {"ALLOWED_HOSTS": "*", "SIMULATOR_ENABLED": "false"},
    ],
)
def test_the_simulator_starts_on_loopback_or_when_forced(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["-c", PROBE], env, tmp_path)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"API_THROTTLE_STAFF": "lots"}, "API_THROTTLE_STAFF"),
        ({"API_THROTTLE_INTEGRATION": "10/fortnight"}, "API_THROTTLE_INTEGRATION"),
        ({"API_THROTTLE_ANONYMOUS": "0/min"}, "API_THROTTLE_ANONYMOUS"),
        ({"LOGIN_FAILURES_PER_ACCOUNT": "10", "LOGIN_FAILURES_PER_IP": "5"}, "LOGIN_FAILURES_PER_IP"),
        ({"SESSION_IDLE_MINUTES": "0"}, "SESSION_IDLE_MINUTES"),
        ({"API_TOKEN_TTL_DAYS": "never"}, "API_TOKEN_TTL_DAYS"),
        ({"PASSWORD_MIN_LENGTH": "4"}, "PASSWORD_MIN_LENGTH"),
        ({"HTTPS_ONLY": "sometimes"}, "HTTPS_ONLY"),
        ({"SIMULATOR_ALLOW_REMOTE": "perhaps"}, "SIMULATOR_ALLOW_REMOTE"),
    ],
)
def test_bad_security_settings_fail_at_start_up_naming_the_variable(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = run(["-c", PROBE], env, tmp_path)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


POOL_PROBE = (
    "import django; django.setup(); from django.db import connection; "
    "cursor = connection.cursor(); cursor.execute('SELECT 1'); print(cursor.fetchone()[0], connection.pool.max_size)"
)


def test_the_production_connection_pool_hands_out_working_connections(db: object, tmp_path: Path) -> None:
    """DB_POOL_MAX_SIZE builds psycopg's pool with Django's own health check: a query runs through it."""
    from django.db import connection

    settings = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}",
        "DB_POOL_MAX_SIZE": "3",
    }
    result = subprocess.run(
        [sys.executable, "-c", POOL_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["1", "3"]


SIZE_PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print((settings.DATABASES['default'].get('OPTIONS') or {}).get('pool', {}).get('max_size', 0), "
    "settings.DATABASES['default'].get('CONN_MAX_AGE'))"
)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, ["10", "0"]), ({"DB_CONN_MAX_AGE": "60"}, ["0", "60"]), ({"DB_POOL_MAX_SIZE": "4"}, ["4", "0"])],
)
def test_production_pools_connections_by_default_unless_persistent_connections_are_asked_for(
    extra: dict[str, str], expected: list[str], tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DB_POOL_MAX_SIZE", "DB_CONN_MAX_AGE")},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        **extra,
    }
    result = subprocess.run(
        [sys.executable, "-c", SIZE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == expected
