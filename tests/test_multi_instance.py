"""Two real gunicorn instances share one PostgreSQL database and one Redis; either serves anyone.

The sandbox (a real HTTP server in this process) delivers webhooks to both in turn, as a load
balancer would, and retries a failed attempt on the other. Every instance runs with
production-like settings: not debug, real secrets, the same on both.
"""

import html
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from portal import sandbox
from portal.models import Verification, WebhookEvent
from tests.conftest import POSTGRES_URL, VALID_FORM, empty_redis, skip_or_fail
from tests.servers import ROOT, free_port, start_gunicorn, wait_until_serving

pytestmark = pytest.mark.postgres

USERS = 12
OUTCOMES = {"verified": "verified", "failed": "failed", "review": "needs_review"}
KILL_AFTER = 0.3  # share of the run's deliveries made before instance A is killed
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
SUBMIT_KEY_FIELD = re.compile(r'name="submit_key" type="hidden" value="([^"]+)"')
MEDALLION_LINK = re.compile(r'id="medallion-link" href="([^"]+)"')


def wait_until(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


@pytest.fixture(scope="module")
def shared_redis():
    """The test Redis database, shared by both instances, emptied before and after."""
    with empty_redis() as url:
        yield url


@pytest.fixture(scope="module")
def shared_database():
    """A PostgreSQL database made for this test, dropped (connections and all) afterwards."""
    if not POSTGRES_URL:
        skip_or_fail("PORTAL_TEST_DATABASE_URL is not set", "PORTAL_REQUIRE_POSTGRES")
    import psycopg

    server = make_url(POSTGRES_URL)
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        skip_or_fail(f"PostgreSQL is unreachable ({exc})", "PORTAL_REQUIRE_POSTGRES")
    name = f"portal_multi_{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class Instance:
    """One gunicorn master and its workers, in a process group of their own."""

    def __init__(self, name, port, env, log_path):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        bind = ("--bind", f"127.0.0.1:{port}")
        self.process = start_gunicorn(env, log_path, *bind, start_new_session=True)

    def wait_ready(self):
        wait_until_serving(self.process, f"{self.url}/readyz", self.log_path)

    def kill(self):
        """Kill -9 the master and its workers at once, as a crashed machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


@dataclass
class Cluster:
    a: Instance
    b: Instance
    sandbox_url: str
    api_key: str
    database_url: str
    redis_url: str

    def deliveries(self):
        response = requests.get(f"{self.sandbox_url}/_sandbox/deliveries", timeout=5)
        return response.json()["deliveries"]

    def user_access_code(self, medallion_token):
        response = requests.get(
            f"{self.sandbox_url}/user/medallion/{medallion_token}/status",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=5,
        )
        return response.json()["userAccessCode"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shared_database, shared_redis):
    """Instances A and B (two workers each) behind no proxy, the sandbox delivering to both.

    Shared by the module's tests, in order: the last one kills A.
    """
    tmp_path = tmp_path_factory.mktemp("cluster")
    api_key = secrets.token_urlsafe(24)
    webhook_secret = secrets.token_urlsafe(32)
    ports = {"a": free_port(), "b": free_port()}
    hooks = [f"http://127.0.0.1:{ports[n]}/webhooks/authenticate/{webhook_secret}" for n in "ba"]
    sandbox_app = sandbox.create_app(
        {
            "API_KEY": api_key,
            # B first: the first delivery goes to B, the second to A, and so on.
            "WEBHOOK_URL": hooks,
            "WEBHOOK_BACKOFF": 0.05,
            "WEBHOOK_MAX_ATTEMPTS": 6,
            "WEBHOOK_TIMEOUT": 5,
        }
    )
    sandbox_server, _ = sandbox.serve(sandbox_app)
    sandbox_url = f"http://127.0.0.1:{sandbox_server.port}"
    env = instance_env(
        tmp_path,
        PORTAL_SECRET_KEY=secrets.token_urlsafe(32),
        PORTAL_AUTHENTICATE_API_KEY=api_key,
        PORTAL_WEBHOOK_SECRET=webhook_secret,
        PORTAL_DATABASE_URL=shared_database,
        # The address of the proxy both would sit behind; links are built from it alone.
        PORTAL_EXTERNAL_URL=f"http://127.0.0.1:{free_port()}",
        PORTAL_AUTHENTICATE_API_URL=sandbox_url,
        PORTAL_AUTHENTICATE_VERIFY_URL=f"{sandbox_url}/",
        PORTAL_RATELIMIT_STORAGE_URL=shared_redis,
        # Every user of the test comes from 127.0.0.1.
        PORTAL_ONBOARDING_RATE_LIMIT="200 per hour",
    )
    instances = []
    try:
        start_instances(instances, ports, env, tmp_path)
        yield Cluster(*instances, sandbox_url, api_key, shared_database, shared_redis)
    finally:
        for instance in instances:
            instance.stop()
        sandbox_server.shutdown()
        sandbox_app.extensions["sandbox.deliverer"].stop()


def start_instances(instances, ports, env, tmp_path):
    """Migrate the database as an operator would, and start A and B (into `instances`)
    meanwhile: they answer /readyz with 503 until the schema is at the code's head."""
    migrate = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "portal", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    instances.extend(Instance(n.upper(), ports[n], env, tmp_path / f"{n}.log") for n in "ab")
    output, _ = migrate.communicate(timeout=60)
    assert migrate.returncode == 0, output
    for instance in instances:
        instance.wait_ready()


def instance_env(tmp_path, **settings):
    """The environment of both instances: this one's, minus settings that would leak in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PORTAL_", "FLASK_", "GUNICORN_", "SANDBOX_", "WEB_CONCURRENCY"))
    }
    env.update(
        PORTAL_MAIL_OUTBOX_DIR=str(tmp_path / "outbox"),
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="4",
        **settings,
    )
    return env


@dataclass
class User:
    """One person's browser: a session, and where their verification got to."""

    http: requests.Session = field(default_factory=requests.Session)
    continue_url: str = ""
    medallion_url: str = ""
    status_path: str = ""

    def start(self, form_on, submit_on):
        """GET the form on one instance and submit it on the other; return the submit answer."""
        page = self.http.get(f"{form_on.url}/", timeout=10)
        assert page.status_code == 200
        data = dict(
            VALID_FORM,
            csrf_token=CSRF_FIELD.search(page.text).group(1),
            submit_key=SUBMIT_KEY_FIELD.search(page.text).group(1),
        )
        return self.http.post(f"{submit_on.url}/", data=data, allow_redirects=False, timeout=10)

    def go_on(self, submitted, instance):
        """Follow the submit's redirect on `instance` to the next-step page and its link."""
        assert submitted.status_code == 303, submitted.text
        path = urlsplit(submitted.headers["Location"]).path
        self.continue_url = urljoin(instance.url, path)
        self.status_path = path.removesuffix("/continue")
        page = self.http.get(self.continue_url, timeout=10)
        assert page.status_code == 200, page.text
        self.medallion_url = html.unescape(MEDALLION_LINK.search(page.text).group(1))

    @property
    def medallion_token(self):
        return self.medallion_url.rpartition("token=")[2]

    def complete(self, outcome, duplicates=False):
        """Open the Medallion page and pick an outcome, as the person would."""
        query = "&duplicates=1" if duplicates else ""
        assert self.http.get(f"{self.medallion_url}{query}", timeout=10).status_code == 200
        form = {"token": self.medallion_token, "outcome": outcome}
        if duplicates:
            form["duplicates"] = "1"
        done = self.http.post(
            urljoin(self.medallion_url, "/medallion/complete"),
            data=form,
            allow_redirects=False,
            timeout=10,
        )
        assert done.status_code == 303
        return urlsplit(done.headers["Location"]).path


def test_a_user_moves_between_instances_mid_flow(cluster):
    a, b = cluster.a, cluster.b
    user = User()

    # The CSRF token and session cookie come from A, and B accepts them. B does check: a
    # post without them is refused.
    submitted = user.start(form_on=a, submit_on=b)
    user.go_on(submitted, b)
    refused = requests.post(f"{b.url}/", data=VALID_FORM, timeout=10)
    assert refused.status_code == 400
    assert redis_keys(cluster) > 0  # the submit was counted in the shared Redis

    back_to = user.complete("verified")
    assert back_to.startswith("/status/")
    code = cluster.user_access_code(user.medallion_token)
    wait_until(
        lambda: [d for d in cluster.deliveries() if d["state"] == "delivered"][1:],
        15,
        "both webhooks to be delivered",
    )
    started, verified = cluster.deliveries()
    assert (started["status"], verified["status"]) == ("started", "verified")
    assert verified["userAccessCode"] == code
    assert verified["target"] == urlsplit(a.url).netloc  # the decision landed on A

    page = user.http.get(f"{b.url}{back_to}", timeout=10)
    assert page.status_code == 200 and "Verified" in page.text
    poll = user.http.get(f"{b.url}{back_to}.json", timeout=10)
    assert poll.json()["state"] == "verified"


def redis_keys(cluster):
    import redis

    with redis.Redis.from_url(cluster.redis_url) as client:
        return client.dbsize()


@dataclass
class Poll:
    instance: str
    started: float
    ended: float
    status: int | None


class Poller(threading.Thread):
    """Poll every user's status JSON on both instances, as their open pages do, and note it all."""

    def __init__(self, cluster, users):
        super().__init__(daemon=True)
        self.targets = [(i, u.status_path) for u in users for i in (cluster.a, cluster.b)]
        self.polls = []
        self.etags = {}
        self.stopping = threading.Event()

    def run(self):
        with requests.Session() as http:
            while not self.stopping.is_set():
                for instance, path in self.targets:
                    self.poll(http, instance, path)

    def poll(self, http, instance, path):
        headers = {}
        if (instance.name, path) in self.etags:
            headers["If-None-Match"] = self.etags[instance.name, path]
        started = time.monotonic()
        try:
            response = http.get(f"{instance.url}{path}.json", headers=headers, timeout=10)
        except requests.RequestException:
            status = None
        else:
            status = response.status_code
            if response.headers.get("ETag"):
                self.etags[instance.name, path] = response.headers["ETag"]
        self.polls.append(Poll(instance.name, started, time.monotonic(), status))

    def stop(self):
        self.stopping.set()
        self.join(15)


def start_users(cluster):
    """Start USERS verifications at once, each taking the form from one instance and
    submitting it to the other."""

    def start(k):
        first, second = (cluster.a, cluster.b) if k % 2 else (cluster.b, cluster.a)
        user = User()
        user.go_on(user.start(form_on=first, submit_on=second), second)
        return user

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(start, range(USERS)))


def test_killing_an_instance_mid_run_loses_no_webhook_and_fails_no_request_to_the_other(cluster):
    users = start_users(cluster)
    chosen = list(OUTCOMES)
    poller = Poller(cluster, users)
    poller.start()

    # Every third person's events are each delivered twice, as a retrying sender does.
    for k, user in enumerate(users):
        user.complete(chosen[k % len(chosen)], duplicates=k % 3 == 0)
    total = len(cluster.deliveries())
    wait_until(
        lambda: sum(d["state"] == "delivered" for d in cluster.deliveries()) >= total * KILL_AFTER,
        20,
        "the first deliveries",
    )
    killed_at = time.monotonic()
    cluster.a.kill()
    log = wait_until(lambda: finished(cluster.deliveries()), 30, "every delivery to finish")
    time.sleep(0.5)  # the open pages see the last states on B
    poller.stop()

    assert_every_event_recorded_once(cluster, log)
    assert_every_record_decided_as_chosen(cluster, users, chosen)
    assert_only_requests_to_the_dead_instance_failed(poller.polls, killed_at)


def finished(log):
    """Return the delivery log once no delivery is waiting or under way, else None."""
    return log if all(d["state"] not in ("queued", "sending") for d in log) else None


def assert_every_event_recorded_once(cluster, log):
    assert {d["state"] for d in log} == {"delivered"}, log
    # A's death sent some attempts elsewhere: the run did go through the failure.
    assert any(d["attempts"] > 1 for d in log)
    sent = {d["eventId"] for d in log}
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            stored = list(conn.scalars(select(WebhookEvent.event_id)))
            assert conn.scalar(select(func.count()).select_from(WebhookEvent)) == len(sent)
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(sent)


def assert_every_record_decided_as_chosen(cluster, users, chosen):
    expected = {
        cluster.user_access_code(user.medallion_token): OUTCOMES[chosen[k % len(chosen)]]
        for k, user in enumerate(users)
    }
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Verification.user_access_code, Verification.state))
            states = {code: state for code, state in rows if code in expected}
    finally:
        engine.dispose()
    assert states == expected
    for k, user in enumerate(users):
        poll = requests.get(f"{cluster.b.url}{user.status_path}.json", timeout=10)
        assert poll.json()["state"] == OUTCOMES[chosen[k % len(chosen)]]


def assert_only_requests_to_the_dead_instance_failed(polls, killed_at):
    on_b = [o for o in polls if o.instance == "B"]
    assert on_b and all(o.status in (200, 304) for o in on_b), {o.status for o in on_b}
    assert any(o.started > killed_at for o in on_b)
    on_a = [o for o in polls if o.instance == "A"]
    assert all(o.status in (200, 304) for o in on_a if o.ended < killed_at)
    after = [o for o in on_a if o.started > killed_at]
    assert after and all(o.status is None for o in after)
