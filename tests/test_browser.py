"""A real browser (Debian's Chromium through Playwright) goes from the form to "Verified"."""

import email
import email.policy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import skip_or_fail

pytestmark = pytest.mark.browser

# Flags for a root, headless, offline machine: no sandboxing (root), and no background
# traffic to Google's services, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path():
    return os.environ.get("PORTAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def sandbox_config():
    # The webhook lands a few seconds after the choice, so the status page is seen first in
    # its earlier state and must change by itself.
    return {"WEBHOOK_BACKOFF": 0.05, "WEBHOOK_DELAY": 2.5}


@pytest.fixture
def outbox(tmp_path):
    return tmp_path / "outbox"


@pytest.fixture
def portal_config(outbox):
    return {
        "STATUS_POLL_SECONDS": 1,
        "NEXT_STEP_REDIRECT_SECONDS": 1,
        "MAIL_BACKEND": "outbox",
        "MAIL_OUTBOX_DIR": str(outbox),
    }


@pytest.fixture
def browser():
    path = chromium_path()
    if not os.path.exists(path):
        skip_or_fail(f"no Chromium at {path}; install Debian's chromium", "PORTAL_REQUIRE_BROWSER")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Reports each Content-Security-Policy violation on every page the context opens, across
# navigations, to the test (exposed function below); Chromium also logs them to the console.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  window.__reportCspViolation(
    event.effectiveDirective + " blocked " + (event.blockedURI || "inline code") +
    " on " + location.pathname);
});
"""


@pytest.fixture
def page(browser):
    # A phone-sized window: most people onboard on their phone.
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    violations = []
    context.expose_function("__reportCspViolation", lambda text: violations.append(text))
    context.add_init_script(CSP_LISTENER)

    def on_console(message):
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    context.on("console", on_console)
    page = context.new_page()
    page.csp_violations = violations
    yield page
    context.close()
    # Every browser test doubles as a CSP check of the pages it went through.
    assert violations == [], "the portal's pages broke their own Content-Security-Policy"


def wait_for_violation(page):
    for _ in range(100):
        if page.csp_violations:
            return
        page.wait_for_timeout(50)


def test_browser_pages_raise_no_csp_violation(live, page):
    from playwright.sync_api import expect

    from portal.store import admin as admin_store
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME

    # The listener works: an inline style added to a portal page is reported.
    page.goto(f"{live.portal_url}/")
    page.evaluate(
        "() => { const s = document.createElement('style'); s.textContent = 'p {}';"
        " document.head.appendChild(s); }"
    )
    wait_for_violation(page)
    page.wait_for_timeout(500)  # the event's report and the console line arrive separately
    assert any(" blocked inline" in text for text in page.csp_violations), page.csp_violations
    assert any("Content Security Policy" in text for text in page.csp_violations)
    page.csp_violations.clear()

    live.portal_app.config["NEXT_STEP_REDIRECT_SECONDS"] = 60
    page.goto(f"{live.portal_url}/")
    fill_form(page, "Dana")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".qr svg")).to_be_visible()  # the next-step page, with its QR code
    expect(page.locator("#forward-text")).to_contain_text("Taking you there in")
    page.get_by_role("link", name="your status page").click()
    expect(page.locator("#status-title")).to_be_visible()

    with live.portal_app.app_context():
        admin_store.add_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live.portal_url}/admin")
    page.get_by_label("Username").fill(ADMIN_USERNAME)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("svg").first).to_be_visible()  # the dashboard's chart
    page.get_by_role("link", name="Records").first.click()
    page.locator("table tbody tr a").first.click()
    expect(page.get_by_role("button", name="Re-check with Authenticate")).to_be_visible()
    page.wait_for_timeout(500)  # reports are asynchronous: give any a moment to arrive

    assert page.csp_violations == []


def fill_form(page, first_name):
    page.get_by_label("First name").fill(first_name)
    page.get_by_label("Last name").fill("Saldaña-Pérez")
    page.get_by_label("Date of birth").fill("1990-05-22")
    page.get_by_label("Email address").fill("browser.test@example.org")
    page.get_by_label("Phone number (optional)").fill("+44 20 7946 0958")
    page.get_by_label("Country").select_option("CAN")
    page.get_by_label("I agree").check()


def test_browser_form_to_verified_without_reload(live, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(f"{live.portal_url}/")
    fill_form(page, "小龍")
    page.get_by_role("button", name="Continue").click()

    # The next-step page forwards the browser to Medallion by itself.
    page.wait_for_url(f"{live.sandbox_url}/?token=*", timeout=15_000)
    page.get_by_role("button", name="Verified").click()

    page.wait_for_url(f"{live.portal_url}/status/*", timeout=15_000)
    title = page.locator("#status-title")
    expect(title).not_to_have_text("Verified")
    page.evaluate("window.__sameDocument = true")
    expect(title).to_have_text("Verified", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    expect(page).to_have_title("Verified · Identity verification")  # the tab follows too
    expect(page.locator("#continue")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "verified.png"), full_page=True)


def test_browser_shows_errors_next_to_fields_and_keeps_values(live, page):
    from playwright.sync_api import expect

    page.goto(f"{live.portal_url}/")
    fill_form(page, "O'Brien")
    page.get_by_label("Date of birth").fill("2099-01-01")
    page.get_by_role("button", name="Continue").click()

    expect(page.locator("#birth_date-error")).to_have_text("Enter a date in the past.")
    expect(page.get_by_label("First name")).to_have_value("O'Brien")
    expect(page.get_by_label("Email address")).to_have_value("browser.test@example.org")
    assert live.sandbox_json("/_sandbox/users")["count"] == 0


def test_browser_back_and_resubmit_creates_no_second_user(live, page):
    # The next-step page waits long enough here for the test to step back past it.
    live.portal_app.config["NEXT_STEP_REDIRECT_SECONDS"] = 60
    page.goto(f"{live.portal_url}/")
    fill_form(page, "Dana")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("link", name="Continue to verification").click()
    page.wait_for_url(f"{live.sandbox_url}/?token=*", timeout=15_000)

    # Playwright turns off the back/forward cache, so Back re-fetches the form: the worst case.
    page.go_back()
    page.wait_for_url(f"{live.portal_url}/status/**", timeout=15_000)
    page.go_back()
    page.wait_for_url(f"{live.portal_url}/", timeout=15_000)
    fill_form(page, "Dana")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{live.portal_url}/status/**", timeout=15_000)

    assert live.sandbox_json("/_sandbox/users")["count"] == 1


def test_browser_email_path_from_outbox_link_to_verified(live, page, outbox):
    from playwright.sync_api import expect

    page.goto(f"{live.portal_url}/")
    fill_form(page, "Dana")
    page.get_by_label("Email me a link").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()
    # The QR code on the page must scan to the resume link shown beside it.
    if not shutil.which("zbarimg"):
        skip_or_fail(
            "no zbarimg to decode the QR code (Debian's zbar-tools)", "PORTAL_REQUIRE_BROWSER"
        )
    page.locator(".qr").screenshot(path=str(outbox.parent / "qr.png"))
    decoded = subprocess.run(
        ["zbarimg", "-q", "--raw", str(outbox.parent / "qr.png")],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert decoded == page.locator("#resume-link").get_attribute("href")

    [eml] = outbox.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    resume = re.search(r"http://\S+/resume/\S+", text).group(0)
    assert message["To"] == "browser.test@example.org"

    # On "the phone": open the emailed link in a fresh browser context.
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844})
    try:
        tab = phone.new_page()
        tab.goto(resume)
        tab.wait_for_url(f"{live.sandbox_url}/?token=*", timeout=15_000)
        tab.get_by_role("button", name="Verified").click()
        tab.wait_for_url(f"{live.portal_url}/status/*", timeout=15_000)
        expect(tab.locator("#status-title")).to_have_text("Verified", timeout=20_000)
    finally:
        phone.close()


def test_browser_admin_signs_in_filters_opens_a_record_and_exports(live, page, tmp_path):
    from playwright.sync_api import expect

    from portal.store import admin as admin_store
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME
    from tests.test_integration import complete_medallion, onboard, uuid_behind

    with live.portal_app.app_context():
        admin_store.add_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
    outcomes = {}
    for outcome in ("verified", "failed"):
        with requests.Session() as session:
            link, _ = onboard(live, session)
            complete_medallion(session, link, outcome)
        outcomes[outcome] = uuid_behind(live, link)
        assert live.wait_for_state(outcomes[outcome], outcome, seconds=20) == outcome

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live.portal_url}/admin")
    page.get_by_label("Username").fill(ADMIN_USERNAME)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    page.get_by_role("link", name="Records").first.click()
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Show records").click()
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name=outcomes["failed"]).click()

    expect(page.get_by_text("SELF_VERIFICATION_TRY_STATUS").first).to_be_visible()
    page.get_by_role("button", name="Re-check with Authenticate").click()
    expect(page.locator("[role=alert], .notice").first).to_be_visible()

    page.get_by_role("link", name="Records").first.click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download all matching records as CSV").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("user_access_code,state")
    assert outcomes["verified"] in csv_text and outcomes["failed"] in csv_text


def test_browser_next_step_page_can_stay_to_scan_the_qr_code(live, page):
    from playwright.sync_api import expect

    live.portal_app.config["NEXT_STEP_REDIRECT_SECONDS"] = 3
    page.goto(f"{live.portal_url}/")
    fill_form(page, "Dana")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#forward-text")).to_contain_text("Taking you there in")
    page.get_by_role("button", name="Stay on this page").click()
    page.wait_for_timeout(4_000)
    assert "/continue" in page.url
    expect(page.locator("#forward-text")).to_contain_text("We'll wait here")
    page.get_by_role("link", name="Continue to verification").click()
    page.wait_for_url(f"{live.sandbox_url}/?token=*", timeout=15_000)


def test_browser_phone_is_not_asked_to_scan_a_code_with_itself(live, browser):
    from playwright.sync_api import expect

    live.portal_app.config["NEXT_STEP_REDIRECT_SECONDS"] = 60
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="en-US"
    )
    try:
        page = phone.new_page()
        page.goto(f"{live.portal_url}/")
        fill_form(page, "Dana")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("link", name="Continue to verification")).to_be_visible()
        expect(page.locator(".handoff-to-phone")).to_be_hidden()

        # Nor when the link was emailed: the page goes on with "Continue on this device".
        phone.clear_cookies()  # another person on another phone
        page.goto(f"{live.portal_url}/")
        fill_form(page, "Dana")
        page.get_by_label("Email me a link").check()
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        expect(page.get_by_role("link", name="Continue on this device now")).to_be_visible()
        expect(page.get_by_text("Scan this code with your phone")).to_be_hidden()
    finally:
        phone.close()


@pytest.fixture
def https_portal(tmp_path):
    """The portal served over TLS (a throwaway self-signed certificate), CSRF on, as behind
    a TLS proxy: Flask-WTF then also insists on a same-origin Referer on every POST."""
    import threading

    from werkzeug.serving import make_server

    from tests.conftest import FakeAuthenticate, make_app

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    app = make_app(f"sqlite:///{tmp_path / 'https.sqlite3'}", WTF_CSRF_ENABLED=True)
    app.extensions["portal.client"] = FakeAuthenticate()
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(str(cert), str(key)))
    url = f"https://127.0.0.1:{server.port}"
    app.config.update(EXTERNAL_URL=url, SESSION_COOKIE_SECURE=True, NEXT_STEP_REDIRECT_SECONDS=60)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url
    server.shutdown()
    server.server_close()


def test_browser_form_posts_work_over_https(https_portal, browser):
    from playwright.sync_api import expect

    context = browser.new_context(ignore_https_errors=True, locale="en-US")
    try:
        page = context.new_page()
        page.goto(f"{https_portal}/")
        fill_form(page, "Dana")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("link", name="Continue to verification")).to_be_visible()
    finally:
        context.close()


def test_browser_form_with_a_stale_csrf_token_comes_back_filled_in(live, page):
    from playwright.sync_api import expect

    live.portal_app.config["NEXT_STEP_REDIRECT_SECONDS"] = 60
    page.goto(f"{live.portal_url}/")
    fill_form(page, "Dana")
    # As if the form had been left open for hours: its token no longer checks out.
    page.locator("form[action='/'] input[name=csrf_token]").evaluate("field => field.value = 'x'")
    page.get_by_role("button", name="Continue").click()

    expect(page.locator(".error-summary")).to_contain_text("couldn't accept that form")
    expect(page.get_by_label("First name")).to_have_value("Dana")
    expect(page.get_by_label("I agree")).to_be_checked()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("link", name="Continue to verification")).to_be_visible()
