"""`flask --app portal check-config`: every missing or unsafe production setting, by name."""

import os
import subprocess
import sys

import pytest

from portal.config import Defaults, deployment_problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCTION = {
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789",
    "AUTHENTICATE_API_KEY": "live-api-key",
    "WEBHOOK_SECRET": "Zr8kQ2mV7xN4pL9sT1wY6bH3cJ5dF0gA",
    "DATABASE_URL": "postgresql+psycopg://portal:pw@db.internal/portal",
    "EXTERNAL_URL": "https://verify.example.com",
    "AUTHENTICATE_API_URL": "https://api-v3.authenticating.com",
    "AUTHENTICATE_VERIFY_URL": "https://verify.authenticating.com/",
    "MAIL_BACKEND": "smtp",
    "MAIL_SMTP_HOST": "smtp.example.com",
    "RATELIMIT_STORAGE_URL": "redis://redis.internal:6379/0",
    "TRUSTED_PROXIES": 1,
}


def settings(**changes):
    config = {k: getattr(Defaults, k) for k in dir(Defaults) if k.isupper()}
    config.update(PRODUCTION)
    config.update(changes)
    return config


def test_a_production_configuration_has_no_problems():
    assert deployment_problems(settings()) == ([], [])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"SECRET_KEY": Defaults.SECRET_KEY}, "PORTAL_SECRET_KEY is still the development"),
        ({"SECRET_KEY": "..."}, "PORTAL_SECRET_KEY must be at least 32 characters"),
        ({"AUTHENTICATE_API_KEY": ""}, "PORTAL_AUTHENTICATE_API_KEY is not set"),
        ({"WEBHOOK_SECRET": "short"}, "PORTAL_WEBHOOK_SECRET must be at least 32"),
        ({"DATABASE_URL": None}, "PORTAL_DATABASE_URL is not PostgreSQL"),
        ({"DATABASE_URL": "sqlite:////srv/portal.sqlite3"}, "PORTAL_DATABASE_URL is not Postgre"),
        ({"EXTERNAL_URL": "http://verify.example.com"}, "PORTAL_EXTERNAL_URL must be an https"),
        ({"EXTERNAL_URL": "verify.example.com"}, "PORTAL_EXTERNAL_URL must be an https"),
        (
            {"AUTHENTICATE_API_URL": Defaults.AUTHENTICATE_API_URL},
            "PORTAL_AUTHENTICATE_API_URL points at this machine (the development sandbox?)",
        ),
        (
            {"AUTHENTICATE_VERIFY_URL": "https://localhost:5001/"},
            "PORTAL_AUTHENTICATE_VERIFY_URL points at this machine",
        ),
        ({"AUTHENTICATE_API_URL": "http://api.example"}, "PORTAL_AUTHENTICATE_API_URL must be"),
        ({"MAIL_BACKEND": "outbox"}, "PORTAL_MAIL_BACKEND is not smtp"),
        ({"TRUSTED_PROXIES": "one"}, "PORTAL_TRUSTED_PROXIES must be a whole number"),
        ({"TRUSTED_PROXIES": -1}, "PORTAL_TRUSTED_PROXIES must be a whole number"),
        ({"ONBOARDING_RATE_LIMIT": "lots"}, "PORTAL_ONBOARDING_RATE_LIMIT is not a rate limit"),
    ],
)
def test_each_unsafe_setting_is_an_error_that_names_it(changes, named):
    errors, _ = deployment_problems(settings(**changes))

    assert len(errors) == 1
    assert errors[0].startswith(named)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"RATELIMIT_STORAGE_URL": "memory://"}, "PORTAL_RATELIMIT_STORAGE_URL is memory://"),
        ({"TRUSTED_PROXIES": 0}, "PORTAL_TRUSTED_PROXIES is 0"),
        ({"TRUSTED_PROXIES": 5}, "PORTAL_TRUSTED_PROXIES is 5"),
        ({"MAIL_SMTP_SECURITY": "none"}, "PORTAL_MAIL_SMTP_SECURITY is none"),
    ],
)
def test_settings_right_only_in_some_deployments_are_warnings(changes, named):
    errors, warnings = deployment_problems(settings(**changes))

    assert errors == []
    assert len(warnings) == 1
    assert warnings[0].startswith(named)


def check_config(tmp_path, *, command=("check-config",), **environment):
    """Run the real command in a fresh process with only PORTAL_* settings from `environment`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "FLASK_"))}
    env.update({f"PORTAL_{k}": str(v) for k, v in environment.items()})
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "portal", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_command_names_each_problem_and_fails(tmp_path):
    # The development defaults: the portal itself refuses to start with them, but the check
    # must still run and list everything, not stop at the first refusal.
    result = check_config(tmp_path, TRUSTED_PROXIES="many")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    for name in (
        "SECRET_KEY",
        "AUTHENTICATE_API_KEY",
        "WEBHOOK_SECRET",
        "DATABASE_URL",
        "EXTERNAL_URL",
        "AUTHENTICATE_API_URL",
        "AUTHENTICATE_VERIFY_URL",
        "MAIL_BACKEND",
        "TRUSTED_PROXIES",
    ):
        assert any(line.startswith(f"error: PORTAL_{name} ") for line in lines), name
    assert any(line.startswith("warning: PORTAL_RATELIMIT_STORAGE_URL") for line in lines)
    assert "Traceback" not in result.stderr


def test_other_commands_refuse_unsafe_settings_in_one_line_without_a_traceback(tmp_path):
    unsafe = dict(PRODUCTION, TRUSTED_PROXIES="many")
    result = check_config(tmp_path, command=("admin", "disable", "nobody"), **unsafe)

    assert result.returncode == 1
    assert result.stderr.startswith("Error: PORTAL_TRUSTED_PROXIES must be a whole number")
    assert "Traceback" not in result.stderr

    result = check_config(tmp_path, command=("admin", "disable", "nobody"))

    assert result.returncode == 1
    assert result.stderr.startswith(
        "Error: Refusing to start outside debug/testing: PORTAL_SECRET_KEY is still the "
    )
    assert "or FLASK_DEBUG=1 for development." in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_command_passes_with_warnings_only(tmp_path):
    production = dict(PRODUCTION, RATELIMIT_STORAGE_URL="memory://")

    result = check_config(tmp_path, **production)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "warning: PORTAL_RATELIMIT_STORAGE_URL is memory://: each worker process of each "
        "instance counts alone, so limits multiply by workers x instances; use redis://",
        "Configuration OK (with warnings).",
    ]
