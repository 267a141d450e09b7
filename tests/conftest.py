import os
import re
import uuid

import pytest
from sqlalchemy import create_engine, text

from portal import create_app
from portal.client import (
    AuthenticateUnavailable,
    CreatedUser,
    MedallionLink,
)
from portal.extensions import db

TEST_SECRET_KEY = "test-secret-key"
TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123456789"
POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")


def skip_or_fail(reason, required_by):
    """Skip with a reason, or fail when the environment variable `required_by` is set."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason} (and {required_by}=1)")
    pytest.skip(reason)


def base_config(database_url, **extra):
    config = {
        "TESTING": True,
        "SECRET_KEY": TEST_SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "WTF_CSRF_ENABLED": False,
        "WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "EXTERNAL_URL": "https://portal.example.test",
        "AUTHENTICATE_API_URL": "https://authenticate.invalid",
        "AUTHENTICATE_VERIFY_URL": "https://verify.invalid/",
        "AUTHENTICATE_CONNECT_TIMEOUT": 0.5,
        "AUTHENTICATE_READ_TIMEOUT": 1.0,
    }
    config.update(extra)
    return config


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'portal.sqlite3'}"


@pytest.fixture
def postgres_url():
    """A PostgreSQL URL whose connections see a schema of their own, dropped afterwards."""
    if not POSTGRES_URL:
        skip_or_fail("PORTAL_TEST_DATABASE_URL is not set", "PORTAL_REQUIRE_POSTGRES")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """Each test using this runs on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


def make_app(database_url, **extra):
    app = create_app(base_config(database_url, **extra))
    with app.app_context():
        db.create_all()
    return app


@pytest.fixture
def app(sqlite_url):
    app = make_app(sqlite_url)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class FakeAuthenticate:
    """An in-memory stand-in for AuthenticateClient with the same public methods."""

    timeout = (0.1, 0.1)

    def __init__(self):
        self.users = []
        self.links = []
        self.create_error = None
        self.link_error = None

    def create_user(self, user):
        if self.create_error is not None:
            raise self.create_error
        self.users.append(user)
        return CreatedUser(user_access_code=str(uuid.uuid4()))

    def create_link(self, user_access_code, redirect_url):
        if self.link_error is not None:
            raise self.link_error
        token = str(uuid.uuid4())
        self.links.append((user_access_code, redirect_url))
        return MedallionLink(token=token, jwt="jwt", url=f"https://verify.invalid/?token={token}")


@pytest.fixture
def fake_client(app):
    fake = FakeAuthenticate()
    app.extensions["portal.client"] = fake
    return fake


@pytest.fixture
def unavailable():
    return AuthenticateUnavailable("down")


VALID_FORM = {
    "first_name": "Dana",
    "middle_name": "",
    "last_name": "Okafor",
    "birth_date": "1988-11-07",
    "email": "dana.okafor@example.org",
    "phone": "",
    "country": "USA",
    "consent": "y",
}


def submit_key_from(html):
    return re.search(r'name="submit_key" type="hidden" value="([^"]+)"', html).group(1)


class Onboarding:
    """Actions on the onboarding form, in the style of flaskr's AuthActions."""

    def __init__(self, client):
        self._client = client

    def fresh_key(self):
        return submit_key_from(self._client.get("/").text)

    def submit(self, key=None, **fields):
        data = dict(VALID_FORM, submit_key=key or self.fresh_key())
        data.update(fields)
        return self._client.post("/", data=data)


@pytest.fixture
def onboarding(client):
    return Onboarding(client)
