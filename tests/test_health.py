"""/healthz and /readyz, with a real PostgreSQL behind a TCP forwarder the test can cut."""

import os
import socket
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from portal import create_app
from portal.extensions import db
from portal.store import readiness
from tests.conftest import base_config, make_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TcpForwarder:
    """Forward a loopback port to `target`; stop() cuts every connection, start() reopens."""

    def __init__(self, target):
        self.target = target
        self.port = None
        self._listener = None
        self._sockets = set()
        self._lock = threading.Lock()

    def start(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port or 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self):
        # shutdown() first: on Linux a bare close() leaves a thread blocked in accept()
        # listening, and new connections would still be let through.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def forwarded(postgres_url):
    """Yield (forwarder, URL of the test schema through it)."""
    url = make_url(postgres_url)
    forwarder = TcpForwarder((url.host or "127.0.0.1", url.port or 5432))
    forwarder.start()
    yield forwarder, url.set(host="127.0.0.1", port=forwarder.port).render_as_string(False)
    forwarder.stop()


def migrate(database_url, revision="head"):
    """Run `flask --app portal db upgrade` in its own process, as an operator would."""
    env = dict(os.environ, PORTAL_DATABASE_URL=database_url, FLASK_DEBUG="1")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "portal", "db", "upgrade", revision],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def probe(client, path="/readyz"):
    response = client.get(path)
    return response.status_code, response.get_json()


def test_readyz_follows_the_database_down_and_back_up(forwarded):
    forwarder, url = forwarded
    app = create_app(base_config(url, DATABASE_CONNECT_TIMEOUT=2))
    client = app.test_client()
    try:
        never_migrated = probe(client)
        migrate(url, "0001")
        behind = probe(client)
        migrate(url)
        ready = probe(client)
        forwarder.stop()
        down, alive = probe(client), probe(client, "/healthz")
        forwarder.start()
        back = probe(client)
    finally:
        with app.app_context():
            db.engine.dispose()

    assert never_migrated == (
        503,
        {
            "status": "unavailable",
            "reason": "database not migrated",
            "detail": "run: flask --app portal db upgrade",
        },
    )
    assert behind[0] == 503
    assert behind[1]["reason"] == "database schema is behind the code"
    assert behind[1]["detail"].startswith("database at ['0001'], code at [")
    assert ready == (200, {"status": "ready"})
    assert down == (
        503,
        {"status": "unavailable", "reason": "database unreachable", "detail": "OperationalError"},
    )
    assert alive == (200, {"status": "ok"})
    assert back == (200, {"status": "ready"})


def test_readyz_stays_ready_on_a_database_a_newer_release_migrated(sqlite_url):
    # A rolling upgrade migrates first; the instances still on the old code keep serving.
    migrate(sqlite_url)
    app = create_app(base_config(sqlite_url))
    current = probe(app.test_client())
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))

    ahead = probe(app.test_client())

    assert current == (200, {"status": "ready"})
    assert ahead[0] == 200
    assert ahead[1]["detail"].startswith("database at ['9999_future'], code at [")
    assert ahead[1]["detail"].endswith("migrated by a newer release")


def test_readyz_expects_the_newest_migration_script(sqlite_url):
    heads = readiness.code_heads()
    newest = sorted(
        name.split("_", 1)[0]
        for name in os.listdir(readiness.MIGRATIONS / "versions")
        if name.endswith(".py")
    )[-1]

    assert heads == {newest}


def test_healthz_needs_no_database(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'missing-dir' / 'x.sqlite3'}"))

    assert probe(app.test_client(), "/healthz") == (200, {"status": "ok"})
    assert probe(app.test_client())[0] == 503


def test_probes_are_never_rate_limited_even_with_a_default_limit(tmp_path):
    # Flask-Limiter's own setting, PORTAL_RATELIMIT_DEFAULT, limits every other route.
    app = make_app(f"sqlite:///{tmp_path / 'limits.sqlite3'}", RATELIMIT_DEFAULT="1 per hour")
    client = app.test_client()

    probes = {client.get(path).status_code for path in ("/healthz", "/readyz") * 10}
    pages = [client.get("/").status_code for _ in range(2)]

    assert 429 not in probes
    assert pages == [200, 429]


def test_readiness_reads_the_same_revisions_as_alembic():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(readiness.MIGRATIONS))

    assert readiness.code_heads() == frozenset(scripts.get_heads())
    assert readiness.known_revisions() == {script.revision for script in scripts.walk_revisions()}


def test_a_serving_worker_never_loads_alembic(tmp_path):
    """Alembic (with Mako and Pygments) is ~11 MB per worker; only migrations need it."""
    database_url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    migrate(database_url)
    program = (
        "import sys\n"
        "from portal import create_app\n"
        f"app = create_app({{'TESTING': True, 'SQLALCHEMY_DATABASE_URI': {database_url!r}}})\n"
        "client = app.test_client()\n"
        "assert client.get('/readyz').status_code == 200\n"
        "assert client.get('/').status_code == 200\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'alembic', 'mako'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
