"""Unbound extension objects, bound to the app in create_app."""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from portal.ratelimits import client_address


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
# Limits are declared per view; nothing is limited by default.
limiter = Limiter(key_func=client_address)


def init_limiter(app: Flask) -> None:
    """Bind Flask-Limiter, keeping only the checks that can limit something.

    Every limit in the portal is a view decorator, and each decorator checks its own limits
    when its view runs. Flask-Limiter's app-wide before-request pass only evaluates default,
    application and blueprint limits, which the portal does not use; on every request (status
    polls, webhooks, pages) it still cost about a tenth of the portal's own time. It stays in
    place if default or application limits are ever configured.
    """
    limiter.init_app(app)
    if app.config.get("RATELIMIT_DEFAULT") or app.config.get("RATELIMIT_APPLICATION"):
        return
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:
        hooks.remove(limiter._check_request_limit)


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, without building a signer when there is no cookie.

    Webhooks, status polls and first visits carry no session cookie; Flask would still build
    an itsdangerous serializer for each of them before finding that out.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)
