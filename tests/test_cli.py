from urllib.parse import urlsplit

import pytest
from flask.cli import FlaskGroup, ScriptInfo

from portal.extensions import db
from tests.conftest import TEST_WEBHOOK_SECRET, make_app


def flask_command(app, runner, monkeypatch, *args):
    """Run a command the way `flask --app portal ...` does (FlaskGroup pushes the app context)."""
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "false")  # FlaskGroup sets it; restored after
    group = FlaskGroup(create_app=lambda: app, load_dotenv=False, set_debug_flag=False)
    return runner.invoke(group, list(args), obj=ScriptInfo(create_app=lambda: app))


@pytest.fixture
def url_app(sqlite_url):
    apps = []

    def build(**config):
        app = make_app(sqlite_url, **config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_webhook_url_prints_the_url_built_from_config(runner):
    result = runner.invoke(args=["webhook-url"])

    assert result.exit_code == 0, result.output
    assert result.output == (
        f"https://portal.example.test/webhooks/authenticate/{TEST_WEBHOOK_SECRET}\n"
    )


def test_webhook_url_prints_the_same_through_the_flask_command(app, runner, monkeypatch):
    assert flask_command(app, runner, monkeypatch, "webhook-url").output == (
        runner.invoke(args=["webhook-url"]).output
    )


@pytest.mark.parametrize(
    ("external_url", "printed_base"),
    [
        ("https://portal.example.test", "https://portal.example.test"),
        ("https://portal.example.test/", "https://portal.example.test"),
        ("https://example.test/onboarding", "https://example.test/onboarding"),
        ("https://example.test/onboarding/", "https://example.test/onboarding"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_webhook_url_prints_the_external_webhook_url(url_app, external_url, printed_base):
    app = url_app(EXTERNAL_URL=external_url)

    result = app.test_cli_runner().invoke(args=["webhook-url"])

    assert result.exit_code == 0, result.output
    assert result.output == f"{printed_base}/webhooks/authenticate/{TEST_WEBHOOK_SECRET}\n"


@pytest.mark.parametrize(
    "secret",
    [
        TEST_WEBHOOK_SECRET,
        "Kx9+u8bq0Zc4m1T7yJ3wLr2Vf5Hn6Pd0Ae4Sg8Io2=",
        "secret with spaces and ünïcode 0123456789abcdef",
    ],
)
def test_webhook_url_printed_accepts_deliveries(url_app, secret):
    app = url_app(WEBHOOK_SECRET=secret)
    printed = app.test_cli_runner().invoke(args=["webhook-url"]).output.strip()

    response = app.test_client().post(
        urlsplit(printed).path,
        json={"id": "evt-1", "event": "USER_PII_UPDATE", "order": {}},
    )

    assert response.status_code == 200
    assert response.get_json() == {"outcome": "orphan"}
