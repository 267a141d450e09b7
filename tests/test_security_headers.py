"""Security headers on every kind of response, and pages with no inline script or style."""

from html.parser import HTMLParser
from pathlib import Path

import pytest

from portal import store
from portal.helpers import STATUS_PURPOSE
from portal.tokens import LinkSigner
from tests.conftest import TEST_SECRET_KEY, TEST_WEBHOOK_SECRET, VALID_FORM, make_app

ROOT = Path(__file__).resolve().parent.parent
UAC = "7b1e3c55-0f2a-4d8e-9a61-5c3d2e1f0a9b"
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"


def status_token(uac=UAC):
    return LinkSigner(TEST_SECRET_KEY, STATUS_PURPOSE).dumps(uac)


def resume_token(uac=UAC):
    return LinkSigner(TEST_SECRET_KEY, "resume").dumps(uac)


@pytest.fixture
def site(app, admin_client, fake_client):
    """The app with one record and a signed-in admin; returns the admin's test client."""
    with app.app_context():
        store.add_verification(UAC, "key-headers")
    return admin_client


def poll_etag(client):
    return client.get(f"/status/{status_token()}.json").headers["ETag"]


# Each case: (name, request) -> the response; run against a signed-in admin's client.
RESPONSES = {
    "html page": lambda c: c.get("/"),
    "form error page": lambda c: c.post("/", data=dict(VALID_FORM, first_name="")),
    "redirect": lambda c: c.post("/new"),
    "status page": lambda c: c.get(f"/status/{status_token()}"),
    "json poll": lambda c: c.get(f"/status/{status_token()}.json"),
    "304": lambda c: c.get(
        f"/status/{status_token()}.json", headers={"If-None-Match": poll_etag(c)}
    ),
    "next step page": lambda c: c.get(f"/status/{status_token()}/continue"),
    "emailed page": lambda c: c.get(f"/status/{status_token()}/emailed"),
    "broken status link": lambda c: c.get("/status/not-a-token"),
    "resume redirect": lambda c: c.get(f"/resume/{resume_token()}"),
    "broken resume link": lambda c: c.get("/resume/not-a-token"),
    "static file": lambda c: c.get("/static/style.css"),
    "404": lambda c: c.get("/no-such-page"),
    "webhook 404": lambda c: c.post("/webhooks/authenticate/wrong-secret", json={}),
    "webhook 415": lambda c: c.post(HOOK, data="x", content_type="text/plain"),
    "webhook 400": lambda c: c.post(HOOK, json={"eventId": 1}),
    "admin page": lambda c: c.get("/admin"),
    "admin record page": lambda c: c.get(f"/admin/records/{UAC}"),
    "csv export": lambda c: c.get("/admin/records.csv"),
    "healthz": lambda c: c.get("/healthz"),
    "readyz": lambda c: c.get("/readyz"),
}
# Pages that show one person's state or link, or admin data: never cached.
NO_STORE = {
    "status page",
    "json poll",
    "304",
    "next step page",
    "emailed page",
    "broken status link",
    "resume redirect",
    "broken resume link",
    "admin page",
    "admin record page",
    "csv export",
    "healthz",
    "readyz",
}


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_every_response_carries_the_security_headers(site, name):
    response = RESPONSES[name](site)
    csp = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))

    assert response.status_code < 500 or name == "readyz"
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert "unsafe" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response.headers["Permissions-Policy"]
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    if name in NO_STORE:
        assert response.headers["Cache-Control"] == "no-store"


def test_the_kinds_of_response_are_what_their_names_say(site):
    codes = {name: request(site).status_code for name, request in RESPONSES.items()}

    assert codes["form error page"] == 422
    assert codes["redirect"] == codes["resume redirect"] == 303
    assert codes["304"] == 304
    assert codes["broken status link"] == codes["404"] == codes["webhook 404"] == 404
    assert (codes["webhook 415"], codes["webhook 400"]) == (415, 400)
    assert codes["admin page"] == codes["csv export"] == codes["healthz"] == 200
    # The test database is built by create_all, not migrations: "not ready" is right.
    assert codes["readyz"] == 503


def test_no_hsts_when_the_external_url_is_plain_http(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'http.sqlite3'}", EXTERNAL_URL="http://127.0.0.1:5000")

    response = app.test_client().get("/")

    assert "Strict-Transport-Security" not in response.headers
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


class InlineFinder(HTMLParser):
    """Collect what a `script-src 'self'; style-src 'self'` policy would block."""

    def __init__(self):
        super().__init__()
        self.found = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if "style" in names:
            self.found.append(f"style attribute on <{tag}>")
        self.found.extend(f"{name} on <{tag}>" for name in names if name.startswith("on"))
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script":
            if "src" not in names:
                self.found.append("<script> without src")
            self._in_script = True
        if tag == "a" and any(v and v.startswith("javascript:") for _, v in attrs):
            self.found.append("javascript: link")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline script text")


def inline_code_in(html):
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


def test_inline_finder_sees_each_kind_of_inline_code():
    html = (
        '<p style="color:red" onclick="x()"><style>p{}</style><script>alert(1)</script>'
        '<a href="javascript:x()">x</a>'
    )

    assert inline_code_in(html) == [
        "style attribute on <p>",
        "onclick on <p>",
        "<style> element",
        "<script> without src",
        "inline script text",
        "javascript: link",
    ]


@pytest.mark.parametrize(
    "name",
    ["html page", "form error page", "status page", "next step page", "emailed page"]
    + ["broken status link", "broken resume link", "404", "admin page", "admin record page"],
)
def test_pages_have_no_inline_script_or_style(site, name):
    response = RESPONSES[name](site)

    assert response.mimetype == "text/html"
    assert inline_code_in(response.text) == []


def test_admin_dashboard_chart_and_login_have_no_inline_style(app, client, admin, fake_client):
    login_page = client.get("/admin/login")
    admin.create()
    admin.login()
    with app.app_context():
        store.add_verification(UAC, "key-chart")

    dashboard = client.get("/admin")

    assert "<svg" in dashboard.text
    assert inline_code_in(login_page.text) == []
    assert inline_code_in(dashboard.text) == []


# Email HTML is read in mail clients, not under the portal's CSP.
PAGE_TEMPLATES = sorted(p for p in (ROOT / "templates").rglob("*.html") if p.parent.name != "mail")


@pytest.mark.parametrize("path", PAGE_TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_templates_hold_no_inline_script_or_style(path):
    # Jinja markup is not HTML; the finder only needs the tags around it.
    assert inline_code_in(path.read_text()) == []
