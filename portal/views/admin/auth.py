"""Admin login and logout, and the guard every other admin page sits behind."""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import urlsplit

from flask import (
    Response,
    current_app,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from portal.extensions import limiter
from portal.forms import EmptyForm, LoginForm
from portal.helpers import no_store
from portal.store import admin as admin_store
from portal.views.admin import bp

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = {"admin.login"}
LOGIN_FAILED = "Wrong username or password."


def safe_next(target: str | None) -> str | None:
    """Return `target` if it is a path on this site, else None (no open redirects).

    Refused: anything with a scheme or host (https://x, //x, /\\x), backslashes, and
    control characters (a decoded %0d%0a would split headers).
    """
    if not target or not target.startswith("/") or "\\" in target:
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


@bp.before_request
def require_admin() -> Response | None:
    """Load the signed-in admin; send everyone else to the login page."""
    g.admin = None
    admin_id, version = session.get("admin_id"), session.get("admin_version")
    if admin_id is not None:
        admin = admin_store.get_admin(admin_id)
        # A disabled account, a reset password or a logout elsewhere ends this session too.
        if admin is not None and admin.active and admin.session_version == version:
            g.admin = admin
    if g.admin is None and request.endpoint not in PUBLIC_ENDPOINTS:
        session.pop("admin_id", None)
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")), 303)
    return None


@bp.app_context_processor
def admin_layout() -> dict[str, object]:
    """Give admin pages the log-out button's form."""
    if has_request_context() and request.blueprint == "admin":
        return {"logout_form": EmptyForm()}
    return {}


# Admin pages stay out of every cache.
bp.after_request(no_store)


def login_limit() -> str:
    return str(current_app.config["ADMIN_LOGIN_RATE_LIMIT"])


def login_account_key() -> str:
    """Key login attempts by the account tried, so one account can't be guessed at quickly.

    Hashed, because the counter key lands in the limiter's storage (Redis, when configured)
    and a username box sometimes holds a mistyped password.
    """
    typed = admin_store.normalise_username(request.form.get("username", ""))[:64]
    return "admin-login:" + hashlib.sha256(typed.encode()).hexdigest()


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, key_func=login_account_key, methods=["POST"])
@limiter.limit(login_limit, methods=["POST"])
def login() -> Response | str | tuple[str, int]:
    """Sign in; the same answer, in similar time, for an unknown user and a wrong password."""
    form = LoginForm(next=request.args.get("next", ""))
    if not form.validate_on_submit():
        status = 200 if request.method == "GET" else 422
        return render_template("admin/login.html", form=form), status
    admin = admin_store.authenticate(form.username.data, form.password.data)
    if admin is None:
        # Name only a real account: a mistyped username might be a password.
        known = admin_store.get_admin_by_username(form.username.data)
        admin_store.add_audit(known.username if known else "(unknown user)", "login_failed")
        form.form_errors.append(LOGIN_FAILED)
        return render_template("admin/login.html", form=form), 401
    session.clear()
    session.permanent = True  # lasts PORTAL_ADMIN_SESSION_HOURS (see load_config)
    session["admin_id"], session["admin_version"] = admin.id, admin.session_version
    admin_store.add_audit(admin.username, "login")
    # The id, not the username: a username can be a person's name or email address. The
    # audit log, which only admins read, names the account.
    logger.info("admin #%d signed in", admin.id)
    return redirect(safe_next(form.next.data) or url_for("admin.dashboard"), 303)


@bp.post("/logout")
def logout() -> Response:
    """Sign out here and end this admin's other sessions too."""
    if EmptyForm().validate_on_submit():
        admin_store.end_sessions(g.admin)
        admin_store.add_audit(g.admin.username, "logout")
    session.clear()
    return redirect(url_for("admin.login"), 303)
