import io
import json
import logging
import os
import re
import time
import uuid
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import create_engine, select, text

from portal import create_app, store
from portal.cli import webhook_url
from portal.client import (
    AuthenticateUnavailable,
    CreatedUser,
    LinkStatus,
    MedallionLink,
)
from portal.extensions import db
from portal.helpers import load_status_token
from portal.logs import make_handler

TEST_SECRET_KEY = "test-secret-key"
TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123456789"
POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
# A database number of its own, since tests empty it.
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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


@contextmanager
def empty_redis():
    """Yield the test Redis database's URL, emptied before and after; skip if unreachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        skip_or_fail(f"Redis is not reachable at {REDIS_URL} ({exc})", "PORTAL_REQUIRE_REDIS")
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_url():
    """A Redis database for rate-limit counters, emptied before and after the test."""
    with empty_redis() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """Each test using this runs on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


def make_app(database_url, **extra):
    app = create_app(base_config(database_url, **extra))
    with app.app_context():
        db.create_all()
    return app


def database_rows(app):
    """Return every row of every table, to show that a request changed nothing at all."""
    with app.app_context():
        rows = {
            table.name: sorted(map(tuple, db.session.execute(select(table))), key=repr)
            for table in db.metadata.sorted_tables
        }
        db.session.remove()
    return rows


@pytest.fixture
def app(sqlite_url):
    app = make_app(sqlite_url)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def store_app(database_url):
    """An app on each backend, with its app context pushed for the whole test."""
    app = make_app(database_url)
    with app.app_context():
        yield app
        db.session.remove()
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
        self.statuses = {}
        self.status_error = None

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

    def get_link_status(self, token):
        if self.status_error is not None:
            raise self.status_error
        return LinkStatus(status=self.statuses.get(token), verification_method="governmentId")


@pytest.fixture
def fake_client(app):
    fake = FakeAuthenticate()
    app.extensions["portal.client"] = fake
    return fake


@pytest.fixture
def build(tmp_path):
    """Build apps with a fake Authenticate, disposed afterwards.

    Each call `build(database=None, **settings)` returns (app, fake); without `database`,
    the app gets a new SQLite file of its own.
    """
    apps = []

    def make(database=None, **extra):
        database = database or f"sqlite:///{tmp_path / f'app{len(apps)}.sqlite3'}"
        app = make_app(database, **extra)
        fake = FakeAuthenticate()
        app.extensions["portal.client"] = fake
        apps.append(app)
        return app, fake

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def configured(build):
    """Build apps with extra settings and a fake Authenticate; each call returns
    (app, client, fake)."""

    def make(**extra):
        app, fake = build(**extra)
        return app, app.test_client(), fake

    return make


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
    "delivery": "now",
}


def submit_key_from(html):
    return re.search(r'name="submit_key" type="hidden" value="([^"]+)"', html).group(1)


class Onboarding:
    """Actions on the onboarding form, in the style of flaskr's AuthActions."""

    def __init__(self, client):
        self._client = client

    def fresh_key(self):
        """Start a new verification in this browser, as "Start a new verification" does."""
        self._client.post("/new")
        return submit_key_from(self._client.get("/").text)

    def submit(self, key=None, **fields):
        data = dict(VALID_FORM, submit_key=key or self.fresh_key())
        data.update(fields)
        return self._client.post("/", data=data)


@pytest.fixture
def onboarding(client):
    return Onboarding(client)


def status_uuid(app, url):
    """Return the UUID behind the status token in `url`.

    Signed tokens carry a timestamp to the second, so two links to the same record made a
    second apart differ as text; tests compare what they hold instead.
    """
    token = re.search(r"/status/([^/?]+)", url).group(1).removesuffix(".json")
    with app.app_context():
        return load_status_token(token)


class LiveServers:
    """The portal and the sandbox, each served over real HTTP on a free loopback port."""

    def __init__(self, portal_app, portal_url, sandbox_app, sandbox_url):
        self.portal_app = portal_app
        self.portal_url = portal_url
        self.sandbox_app = sandbox_app
        self.sandbox_url = sandbox_url

    def sandbox_json(self, path):
        response = requests.get(
            f"{self.sandbox_url}{path}",
            headers={"Authorization": "Bearer sandbox-api-key"},
            timeout=5,
        )
        response.raise_for_status()
        return response.json()

    def wait_for_state(self, user_access_code, state, seconds=15):
        """Wait until the portal's record reaches `state`; return the record's final state."""
        deadline = time.monotonic() + seconds
        while True:
            with self.portal_app.app_context():
                db.session.expire_all()
                record = store.get_verification(user_access_code)
                current = record.state if record else None
            if current == state or time.monotonic() > deadline:
                return current
            time.sleep(0.05)


@pytest.fixture
def sandbox_config():
    """Sandbox settings for the `live` fixture; a test module may override this fixture."""
    return {"WEBHOOK_BACKOFF": 0.05, "WEBHOOK_MAX_ATTEMPTS": 8}


@pytest.fixture
def portal_config():
    """Extra portal settings for the `live` fixture; a test module may override this fixture."""
    return {}


@pytest.fixture
def live(tmp_path, sandbox_config, portal_config):
    """Start the sandbox and the portal (CSRF on) and register the webhook, as an operator would."""
    from portal import sandbox

    sandbox_app = sandbox.create_app(sandbox_config)
    sandbox_server, _ = sandbox.serve(sandbox_app)
    sandbox_url = f"http://127.0.0.1:{sandbox_server.port}"
    portal_app = make_app(
        f"sqlite:///{tmp_path / 'live.sqlite3'}",
        WTF_CSRF_ENABLED=True,
        # Plain http, so the session (CSRF) cookie is not marked Secure; the port is set below.
        EXTERNAL_URL="http://127.0.0.1",
        AUTHENTICATE_API_URL=sandbox_url,
        AUTHENTICATE_VERIFY_URL=f"{sandbox_url}/",
        AUTHENTICATE_API_KEY="sandbox-api-key",
        AUTHENTICATE_CONNECT_TIMEOUT=2,
        AUTHENTICATE_READ_TIMEOUT=5,
        **portal_config,
    )
    portal_server, _ = sandbox.serve(portal_app)
    portal_url = f"http://127.0.0.1:{portal_server.port}"
    portal_app.config["EXTERNAL_URL"] = portal_url
    with portal_app.app_context():
        hook = webhook_url()
    registered = requests.post(
        f"{sandbox_url}/company/webhook",
        json={"companyAccessCode": "test-company", "webhookURL": hook},
        headers={"Authorization": "Bearer sandbox-api-key"},
        timeout=5,
    )
    assert registered.status_code == 200
    yield LiveServers(portal_app, portal_url, sandbox_app, sandbox_url)
    portal_server.shutdown()
    sandbox_server.shutdown()
    sandbox_app.extensions["sandbox.deliverer"].stop()
    portal_app.extensions["portal.client"].session.close()
    with portal_app.app_context():
        db.engine.dispose()


ADMIN_USERNAME = "ada"
ADMIN_PASSWORD = "correct horse battery staple"


class AdminActions:
    """Sign an admin in and out, in the style of flaskr's AuthActions."""

    def __init__(self, app, client):
        self._app = app
        self._client = client

    def create(self, username=ADMIN_USERNAME, password=ADMIN_PASSWORD):
        from portal.store import admin as admin_store

        with self._app.app_context():
            admin_store.add_admin(username, password)

    def login(self, username=ADMIN_USERNAME, password=ADMIN_PASSWORD, next_path=""):
        return self._client.post(
            "/admin/login", data={"username": username, "password": password, "next": next_path}
        )

    def logout(self):
        return self._client.post("/admin/logout")


@pytest.fixture
def admin(app, client):
    return AdminActions(app, client)


@pytest.fixture
def admin_client(admin, client):
    """A test client signed in as an admin."""
    admin.create()
    assert admin.login().status_code == 303
    return client


class LogLines:
    """What the portal's real JSON log handler wrote, as text and as parsed lines."""

    def __init__(self, stream):
        self._stream = stream

    @property
    def text(self):
        return self._stream.getvalue()

    def lines(self):
        return [json.loads(line) for line in self.text.splitlines()]

    def access(self, route=None):
        """The access lines, optionally for one route template."""
        return [
            line
            for line in self.lines()
            if line["logger"] == "portal.access" and route in (None, line["route"])
        ]


@pytest.fixture
def json_log():
    """Attach the production JSON handler to the portal's loggers, writing to a string.

    Tests don't get the stdout handler (pytest captures), so this is how a test reads the
    lines production would write.
    """
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("portal")
    logger.addHandler(handler)
    yield LogLines(stream)
    logger.removeHandler(handler)
