import logging
import os

import pytest
from flask import Flask

from portal import create_app
from portal.config import (
    DEV_AUTHENTICATE_API_KEY,
    DEV_SECRET_KEY,
    DEV_WEBHOOK_SECRET,
    status_map,
)

REAL_SECRETS = {
    "PORTAL_SECRET_KEY": "prod-secret-key-7c1e9a4b52d86f03e1a9c7b4d2f6e8a0",
    "PORTAL_AUTHENTICATE_API_KEY": "live-api-key-5b2d9e71c4a3",
    "PORTAL_WEBHOOK_SECRET": "prod-webhook-secret-0f3a8c6e1d9b4a7f2e5c8b1d4a7f0e3c",
}
DEV_VALUES = {
    "PORTAL_SECRET_KEY": DEV_SECRET_KEY,
    "PORTAL_AUTHENTICATE_API_KEY": DEV_AUTHENTICATE_API_KEY,
    "PORTAL_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
}
IN_MEMORY = {"SQLALCHEMY_DATABASE_URI": "sqlite://"}


@pytest.fixture(autouse=True)
def instance(monkeypatch, tmp_path):
    """A clean environment and an empty instance folder of the test's own."""
    for name in list(os.environ):
        if name.startswith(("PORTAL_", "FLASK_")):
            monkeypatch.delenv(name)
    folder = tmp_path / "instance"
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(folder))
    return folder


@pytest.fixture(autouse=True)
def portal_logger():
    """A production app adds a stdout handler to the "portal" logger; take it off again."""
    logger = logging.getLogger("portal")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def set_env(monkeypatch, values):
    for name, value in values.items():
        monkeypatch.setenv(name, value)


# --- production checks -------------------------------------------------------------------


@pytest.mark.parametrize("env_name", list(REAL_SECRETS))
@pytest.mark.parametrize(
    ("value", "problem"),
    [("", "is not set"), ("dev", "is still the development default")],
)
def test_create_app_refuses_to_start_without_a_real_secret(monkeypatch, env_name, value, problem):
    set_env(monkeypatch, REAL_SECRETS)
    monkeypatch.setenv(env_name, DEV_VALUES[env_name] if value == "dev" else value)

    with pytest.raises(RuntimeError) as refused:
        create_app(IN_MEMORY)

    message = str(refused.value)
    assert f"{env_name} {problem}" in message
    assert "debug/testing" in message
    for other in set(REAL_SECRETS) - {env_name}:
        assert other not in message


def test_create_app_names_every_missing_secret_at_once():
    with pytest.raises(RuntimeError) as refused:
        create_app(IN_MEMORY)

    for env_name in REAL_SECRETS:
        assert f"{env_name} is still the development default" in str(refused.value)


@pytest.mark.parametrize("name", ["SECRET_KEY", "WEBHOOK_SECRET"])
@pytest.mark.parametrize(("length", "starts"), [(3, False), (31, False), (32, True)])
def test_create_app_needs_secrets_of_32_characters(monkeypatch, name, length, starts):
    set_env(monkeypatch, {**REAL_SECRETS, f"PORTAL_{name}": "k" * length})

    if starts:
        assert create_app(IN_MEMORY).config[name] == "k" * length
    else:
        with pytest.raises(RuntimeError, match=f"PORTAL_{name} must be at least 32"):
            create_app(IN_MEMORY)


@pytest.mark.parametrize(
    "secret",
    ["Kx9+u/8bq0Zc4m1T7yJ3wLr2Vf5Hn6Pd0Ae4Sg8Io2=", "secret with spaces 0123456789abcdefghijkl"],
)
def test_create_app_refuses_a_webhook_secret_that_is_not_url_safe(monkeypatch, secret):
    set_env(monkeypatch, {**REAL_SECRETS, "PORTAL_WEBHOOK_SECRET": secret})

    with pytest.raises(RuntimeError, match="PORTAL_WEBHOOK_SECRET may only hold letters"):
        create_app(IN_MEMORY)


def test_create_app_starts_with_real_secrets(monkeypatch):
    set_env(monkeypatch, REAL_SECRETS)

    app = create_app(IN_MEMORY)

    assert not (app.debug or app.testing)
    assert app.config["SECRET_KEY"] == REAL_SECRETS["PORTAL_SECRET_KEY"]
    assert app.config["AUTHENTICATE_API_KEY"] == REAL_SECRETS["PORTAL_AUTHENTICATE_API_KEY"]
    assert app.config["WEBHOOK_SECRET"] == REAL_SECRETS["PORTAL_WEBHOOK_SECRET"]
    assert app.test_client().get("/webhooks/nope").status_code == 404


@pytest.mark.parametrize(
    ("env", "test_config"),
    [
        ({"FLASK_DEBUG": "1"}, {}),
        ({}, {"TESTING": True}),
        ({}, {"DEBUG": True}),
    ],
)
def test_create_app_accepts_development_defaults_in_debug_or_testing(monkeypatch, env, test_config):
    set_env(monkeypatch, env)

    app = create_app({**IN_MEMORY, **test_config})

    assert app.config["SECRET_KEY"] == DEV_SECRET_KEY
    assert app.config["WEBHOOK_SECRET"] == DEV_WEBHOOK_SECRET


def test_create_app_accepts_an_all_digit_webhook_secret(monkeypatch):
    digits = "4" + "1" * 39
    set_env(monkeypatch, {**REAL_SECRETS, "PORTAL_WEBHOOK_SECRET": digits})

    app = create_app(IN_MEMORY)

    assert str(app.config["WEBHOOK_SECRET"]) == digits


# --- where settings come from ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_name", "raw", "key", "value"),
    [
        ("PORTAL_MIN_AGE", "21", "MIN_AGE", 21),
        (
            "PORTAL_EXTERNAL_URL",
            "https://verify.example.org",
            "EXTERNAL_URL",
            "https://verify.example.org",
        ),
        ("PORTAL_SUPPORT_CONTACT", "help@example.org", "SUPPORT_CONTACT", "help@example.org"),
        ("PORTAL_WEBHOOK_MAX_BYTES", "1024", "WEBHOOK_MAX_BYTES", 1024),
        ("PORTAL_STATUS_MAP", '{"Green": "verified"}', "STATUS_MAP", {"Green": "verified"}),
        (
            "PORTAL_DATABASE_URL",
            "sqlite:///from-env.sqlite3",
            "SQLALCHEMY_DATABASE_URI",
            "sqlite:///from-env.sqlite3",
        ),
    ],
)
def test_create_app_reads_portal_environment_variables(monkeypatch, env_name, raw, key, value):
    monkeypatch.setenv(env_name, raw)

    app = create_app({"TESTING": True})

    assert app.config[key] == value


def test_create_app_status_map_from_the_environment_extends_the_defaults(monkeypatch):
    monkeypatch.setenv("PORTAL_STATUS_MAP", '{"Green": "verified"}')

    table = status_map(create_app({**IN_MEMORY, "TESTING": True}).config)

    assert table["green"] == "verified"
    assert table["failed"] == "failed"


def test_create_app_puts_the_default_database_in_the_instance_folder(instance):
    app = create_app({"TESTING": True})

    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'portal.sqlite3'}"
    assert instance.is_dir()


def test_create_app_reads_config_py_from_the_instance_folder(instance, monkeypatch):
    instance.mkdir()
    (instance / "config.py").write_text(
        'SITE_NAME = "Instance portal"\nSUPPORT_CONTACT = "instance desk"\nMIN_AGE = 19\n'
    )
    monkeypatch.setenv("PORTAL_MIN_AGE", "21")

    app = create_app({**IN_MEMORY, "TESTING": True, "SUPPORT_CONTACT": "test desk"})

    assert app.config["SITE_NAME"] == "Instance portal"
    assert app.config["MIN_AGE"] == 21  # the environment beats the instance file
    assert app.config["SUPPORT_CONTACT"] == "test desk"  # test_config beats both


def test_create_app_secrets_from_the_instance_folder_satisfy_the_production_check(instance):
    instance.mkdir()
    (instance / "config.py").write_text(
        "".join(
            f"{name.removeprefix('PORTAL_')} = {value!r}\n" for name, value in REAL_SECRETS.items()
        )
    )

    app = create_app(IN_MEMORY)

    assert app.config["SECRET_KEY"] == REAL_SECRETS["PORTAL_SECRET_KEY"]


def test_create_app_test_config_wins_over_the_environment(monkeypatch):
    set_env(monkeypatch, {"PORTAL_MIN_AGE": "21", "PORTAL_EXTERNAL_URL": "https://env.example.org"})

    app = create_app({**IN_MEMORY, "TESTING": True, "MIN_AGE": 30})

    assert app.config["MIN_AGE"] == 30
    assert app.config["EXTERNAL_URL"] == "https://env.example.org"


def test_create_app_test_config_can_supply_the_production_secrets():
    config = {name.removeprefix("PORTAL_"): value for name, value in REAL_SECRETS.items()}

    app = create_app({**IN_MEMORY, **config})

    assert app.config["AUTHENTICATE_API_KEY"] == REAL_SECRETS["PORTAL_AUTHENTICATE_API_KEY"]
