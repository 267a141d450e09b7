"""Admin accounts: CLI, sign-in, sign-out, throttling, sessions and safe redirects."""

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AdminUser, AuditEntry
from portal.store import admin as admin_store
from portal.views.admin.auth import safe_next
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, make_app


def audit_actions(app):
    with app.app_context():
        return [(e.admin, e.action) for e in db.session.scalars(select(AuditEntry))]


# --- CLI ---------------------------------------------------------------------------------


def test_cli_creates_an_admin_with_a_hashed_password(app, runner):
    result = runner.invoke(
        args=["admin", "create", "Grace", "--password-stdin"], input="a long enough password\n"
    )
    assert result.exit_code == 0, result.output
    assert "Created admin grace." in result.output
    with app.app_context():
        admin = db.session.scalar(select(AdminUser))
        assert admin.username == "grace"
        assert admin.password_hash.startswith("scrypt:")
        assert "a long enough password" not in admin.password_hash


@pytest.mark.parametrize(
    ("args", "given", "message"),
    [
        (["admin", "create", "grace", "--password-stdin"], "short\n", "at least 12"),
        (
            ["admin", "reset-password", "nobody", "--password-stdin"],
            "long enough pass\n",
            "No admin called nobody.",
        ),
        (["admin", "disable", "nobody"], None, "No admin called nobody."),
    ],
)
def test_cli_refuses_with_a_message(runner, args, given, message):
    result = runner.invoke(args=args, input=given)
    assert result.exit_code != 0
    assert message in result.output


def test_cli_refuses_a_second_admin_with_the_same_name(admin, runner):
    admin.create()
    result = runner.invoke(
        args=["admin", "create", ADMIN_USERNAME.upper(), "--password-stdin"],
        input="another long password\n",
    )
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_cli_reset_password_ends_sessions_and_changes_the_password(admin, client, runner):
    admin.create()
    admin.login()
    result = runner.invoke(
        args=["admin", "reset-password", ADMIN_USERNAME, "--password-stdin"],
        input="a brand new password\n",
    )
    assert result.exit_code == 0
    assert client.get("/admin").status_code == 303  # the old session is over
    assert admin.login(password=ADMIN_PASSWORD).status_code == 401
    assert admin.login(password="a brand new password").status_code == 303


def test_cli_disable_ends_sessions_and_refuses_sign_in(admin, client, runner):
    admin.create()
    admin.login()
    assert runner.invoke(args=["admin", "disable", ADMIN_USERNAME]).exit_code == 0
    assert client.get("/admin").status_code == 303
    assert admin.login().status_code == 401


# --- Sign-in and sign-out ------------------------------------------------------------------


def test_admin_pages_send_strangers_to_sign_in_with_next(client):
    response = client.get("/admin/records?state=failed")
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/login?next=/admin/records?state%3Dfailed"


def test_login_lands_on_the_dashboard_and_is_audited(app, admin, client):
    admin.create()
    response = admin.login()
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"
    assert client.get("/admin").status_code == 200
    assert (ADMIN_USERNAME, "login") in audit_actions(app)


def test_login_gives_the_same_answer_for_unknown_user_and_wrong_password(app, admin):
    admin.create()
    unknown = admin.login(username="nobody", password="whatever it is")
    wrong = admin.login(password="not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.text == wrong.text.replace(ADMIN_USERNAME, "nobody")
    assert "Wrong username or password." in unknown.text
    assert ("(unknown user)", "login_failed") in audit_actions(app)
    assert (ADMIN_USERNAME, "login_failed") in audit_actions(app)


def test_login_checks_a_password_hash_even_for_an_unknown_user(app, monkeypatch):
    checked = []
    real = admin_store.check_password_hash
    monkeypatch.setattr(
        admin_store,
        "check_password_hash",
        lambda hashed, password: checked.append(hashed) or real(hashed, password),
    )
    with app.app_context():
        assert admin_store.authenticate("nobody", "whatever") is None
    assert len(checked) == 1 and checked[0].startswith("scrypt:")


def test_logout_ends_the_session(app, admin, admin_client):
    assert admin_client.get("/admin").status_code == 200
    assert admin.logout().status_code == 303
    assert admin_client.get("/admin").status_code == 303
    assert (ADMIN_USERNAME, "logout") in audit_actions(app)


def test_logout_elsewhere_ends_this_session_too(app, admin, admin_client):
    other = app.test_client()
    other.post("/admin/login", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    other.post("/admin/logout")
    assert admin_client.get("/admin").status_code == 303


def test_session_cookie_is_httponly_lax_and_secure_for_https(admin, client):
    admin.create()
    cookie = admin.login().headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie  # the test EXTERNAL_URL is https
    assert "Expires=" in cookie


def test_session_cookie_is_not_secure_for_plain_http(sqlite_url):
    app = make_app(sqlite_url, EXTERNAL_URL="http://127.0.0.1:5000")
    with app.app_context():
        admin_store.add_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
    cookie = (
        app.test_client()
        .post("/admin/login", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        .headers["Set-Cookie"]
    )
    assert "Secure" not in cookie


def test_login_form_needs_a_csrf_token(sqlite_url):
    app = make_app(sqlite_url, WTF_CSRF_ENABLED=True)
    with app.app_context():
        admin_store.add_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
    response = app.test_client().post(
        "/admin/login", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 400


# --- Throttling ----------------------------------------------------------------------------


def test_login_is_throttled_per_account_across_addresses(sqlite_url):
    app = make_app(sqlite_url, ADMIN_LOGIN_RATE_LIMIT="3 per minute")
    with app.app_context():
        admin_store.add_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
    answers = [
        app.test_client()
        .post(
            "/admin/login",
            data={"username": ADMIN_USERNAME, "password": "wrong guess"},
            environ_base={"REMOTE_ADDR": f"10.0.0.{n}"},
        )
        .status_code
        for n in range(5)
    ]
    assert answers == [401, 401, 401, 429, 429]


def test_login_is_throttled_per_address_across_accounts(sqlite_url):
    app = make_app(sqlite_url, ADMIN_LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    answers = [
        client.post("/admin/login", data={"username": f"user{n}", "password": "x"}).status_code
        for n in range(5)
    ]
    assert answers == [401, 401, 401, 429, 429]


def test_login_page_itself_is_not_throttled(sqlite_url):
    app = make_app(sqlite_url, ADMIN_LOGIN_RATE_LIMIT="1 per minute")
    client = app.test_client()
    assert [client.get("/admin/login").status_code for _ in range(3)] == [200, 200, 200]


# --- Safe redirects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "\\\\evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        "/admin\r\nSet-Cookie: x=1",
        "/admin%0d%0aSet-Cookie: x=1".replace("%0d%0a", "\r\n"),
        "admin",
        "",
    ],
)
def test_safe_next_refuses_anything_but_a_local_path(target):
    assert safe_next(target) is None


@pytest.mark.parametrize("target", ["/admin", "/admin/records?state=failed&q=3f6c"])
def test_safe_next_keeps_local_paths(target):
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "javascript:alert(1)", "/\\evil"]
)
def test_login_never_redirects_off_site(admin, target):
    admin.create()
    response = admin.login(next_path=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"


def test_login_follows_a_local_next(admin):
    admin.create()
    response = admin.login(next_path="/admin/records?state=failed")
    assert response.headers["Location"] == "/admin/records?state=failed"
