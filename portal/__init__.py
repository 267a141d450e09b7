"""The onboarding portal: a stateless front for Authenticate identity verification."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from portal.client import AuthenticateClient
from portal.config import SECRET_SETTINGS, Defaults, production_problems
from portal.extensions import csrf, db, limiter, migrate
from portal.helpers import add_security_headers

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the portal: config, extensions, blueprints, error pages, CLI and logging."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    load_config(app, test_config)
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
    if not (app.debug or app.testing):
        problems = production_problems(app.config)
        if problems:
            raise RuntimeError("Refusing to start outside debug/testing: " + "; ".join(problems))


def sqlite_url(app: Flask) -> str:
    """Return the development database: a SQLite file in the instance folder."""
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "portal.sqlite3")


def register_extensions(app: Flask) -> None:
    """Bind the database, CSRF, migrations and the Authenticate client to the app."""
    db.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    app.extensions["portal.client"] = AuthenticateClient.from_config(app.config)


def register_blueprints(app: Flask) -> None:
    """Attach the portal's views."""
    from portal.views import admin, onboarding, resume, status, webhooks

    app.register_blueprint(onboarding.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(resume.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(webhooks.bp)
    csrf.exempt(webhooks.bp)
    app.after_request(add_security_headers)


def register_error_handlers(app: Flask) -> None:
    """Render friendly error pages (and JSON for machine endpoints)."""
    from portal.errors import register_error_handlers as register

    register(app)


def register_cli(app: Flask) -> None:
    """Add the portal's flask commands."""
    from portal.cli import commands

    for command in commands:
        app.cli.add_command(command)


def configure_logging(app: Flask) -> None:
    """Send the portal's log records to stdout, once; tests keep pytest's capture."""
    logger = logging.getLogger("portal")
    logger.setLevel(app.config["LOG_LEVEL"])
    if app.testing or any(getattr(h, "_portal", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._portal = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    # One line per record, even when something (Alembic's logging config) adds a root handler.
    logger.propagate = False


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets status polls read while a webhook writes; busy_timeout makes concurrent
    # writers wait instead of failing at once.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
