"""The onboarding portal: a stateless front for Authenticate identity verification."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import observability
from portal.client import AuthenticateClient
from portal.config import SECRET_SETTINGS, Defaults, production_problems, trusted_proxies
from portal.extensions import (
    CookieSessionInterface,
    csrf,
    db,
    init_limiter,
    limiter,
)
from portal.helpers import add_security_headers

ROOT = Path(__file__).resolve().parent.parent


class UnsafeConfig(click.ClickException, RuntimeError):
    """Settings the portal will not start with.

    A ClickException, so that a `flask --app portal ...` command prints the reasons in one
    line and exits 1 instead of showing a traceback; gunicorn shows it as a RuntimeError.
    """


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the portal: config, extensions, blueprints, error pages, CLI and logging."""
    app = observability.PortalFlask(
        __name__,
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    load_config(app, test_config)
    trust_proxies(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_cli(app)
    configure_logging(app)
    return app


def load_config(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Apply defaults, then instance/config.py, then PORTAL_* variables, then test_config."""
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("PORTAL")
    for key in SECRET_SETTINGS:
        if f"PORTAL_{key}" in os.environ:
            app.config[key] = os.environ[f"PORTAL_{key}"]
    if test_config is not None:
        app.config.update(test_config)
    if app.config["EXTERNAL_URL"].startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["RATELIMIT_STORAGE_URL"])
    app.permanent_session_lifetime = timedelta(hours=float(app.config["ADMIN_SESSION_HOURS"]))
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"] or sqlite_url(app)
    set_connect_timeout(app)
    if not (app.debug or app.testing or checking_config()):
        problems = production_problems(app.config)
        if problems:
            raise UnsafeConfig(
                "Refusing to start outside debug/testing: "
                + "; ".join(problems)
                + ". Set them (README, Configuration), or FLASK_DEBUG=1 for development."
            )


def checking_config() -> bool:
    """Return True while `flask check-config` loads the app: it reports problems, not refuses.

    The flask CLI builds the app before it looks up the command, so the command line is the
    only place that says which one is about to run.
    """
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and "check-config" in sys.argv[1:]


def set_connect_timeout(app: Flask) -> None:
    """Bound the time to open a PostgreSQL connection (SQLite opens a local file)."""
    if not str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql"):
        return
    # A copy: from_object shares the Defaults class's dict between apps.
    options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
    connect_args = dict(options.get("connect_args", {}))
    connect_args.setdefault("connect_timeout", int(app.config["DATABASE_CONNECT_TIMEOUT"]))
    options["connect_args"] = connect_args
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def trust_proxies(app: Flask) -> None:
    """Believe X-Forwarded-For and -Proto from exactly PORTAL_TRUSTED_PROXIES hops.

    X-Forwarded-Host, -Port and -Prefix are never believed: links come from
    PORTAL_EXTERNAL_URL alone. gunicorn_conf.py turns gunicorn's own forwarded-header
    handling off, so this is the one place that reads them.
    """
    try:
        count = trusted_proxies(app.config)
    except ValueError as exc:
        if checking_config():
            return  # check-config names the problem instead
        raise UnsafeConfig(str(exc)) from exc
    if count:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=count, x_proto=count, x_host=0, x_port=0, x_prefix=0
        )


def sqlite_url(app: Flask) -> str:
    """Return the development database: a SQLite file in the instance folder."""
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "portal.sqlite3")


def register_extensions(app: Flask) -> None:
    """Bind the database, CSRF, migrations and the Authenticate client to the app."""
    db.init_app(app)
    csrf.init_app(app)
    init_limiter(app)
    app.session_interface = CookieSessionInterface()
    app.extensions["portal.client"] = AuthenticateClient.from_config(app.config)


def register_blueprints(app: Flask) -> None:
    """Attach the portal's views."""
    from portal.views import admin, health, metrics, onboarding, resume, status, webhooks

    app.register_blueprint(health.bp)
    # Probes come every few seconds from every balancer: never throttled.
    limiter.exempt(health.bp)
    app.register_blueprint(onboarding.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(resume.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(metrics.bp)
    csrf.exempt(webhooks.bp)
    app.after_request(add_security_headers)


def register_error_handlers(app: Flask) -> None:
    """Render friendly error pages (and JSON for machine endpoints)."""
    from portal.errors import register_error_handlers as register

    register(app)


def register_cli(app: Flask) -> None:
    """Add the portal's flask commands."""
    from portal.cli import commands
    from portal.migrating import db_commands

    for command in commands:
        app.cli.add_command(command)
    app.cli.add_command(db_commands)


def configure_logging(app: Flask) -> None:
    """Log to stdout once, with request ids; time, count and log every request."""
    observability.configure_logging(app)
    observability.init_app(app)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets status polls read while a webhook writes; busy_timeout makes concurrent
    # writers wait instead of failing at once.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
