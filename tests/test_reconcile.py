"""Reconciliation: records that stopped moving are re-checked with Authenticate."""

import requests

from portal import store
from portal.client import AuthenticateRejected, AuthenticateUnavailable
from portal.extensions import db
from portal.reconcile import reconcile
from tests.test_integration import complete_medallion, onboard, uuid_behind


def onboarded(onboarding, client, fake_client):
    """Submit the form and open the next step, so a Medallion token is issued."""
    location = onboarding.submit().headers["Location"]
    client.get(location)
    user_access_code, _ = fake_client.links[-1]
    return user_access_code


def stored(app, user_access_code):
    with app.app_context():
        db.session.expire_all()
        return store.get_verification(user_access_code)


def test_reconcile_recovers_a_missed_webhook_from_the_sandbox(live):
    # Webhooks go nowhere: the portal never hears about the outcome by itself.
    requests.post(
        f"{live.sandbox_url}/company/webhook",
        json={"companyAccessCode": "test-company", "webhookURL": "http://127.0.0.1:9/"},
        headers={"Authorization": "Bearer sandbox-api-key"},
        timeout=5,
    ).raise_for_status()
    with requests.Session() as session:
        link, _ = onboard(live, session)
        complete_medallion(session, link, "verified")
    user_access_code = uuid_behind(live, link)
    assert stored(live.portal_app, user_access_code).state == "pending"

    with live.portal_app.app_context():
        outcomes = reconcile(
            live.portal_app.extensions["portal.client"], live.portal_app.config, older_than=0
        )
    assert outcomes == {"recorded": 1}
    record = stored(live.portal_app, user_access_code)
    assert (record.state, record.raw_status) == ("verified", "verified")


def test_reconcile_skips_records_younger_than_the_configured_age(
    app, client, onboarding, fake_client
):
    onboarded(onboarding, client, fake_client)
    with app.app_context():
        assert reconcile(fake_client, app.config) == {}


def test_reconcile_counts_each_outcome(app, client, onboarding, fake_client):
    with_status = onboarded(onboarding, client, fake_client)
    without_status = onboarded(onboarding, client, fake_client)
    token = stored(app, with_status).medallion_token
    fake_client.statuses[token] = "review"
    with app.app_context():
        assert reconcile(fake_client, app.config, older_than=0) == {
            "recorded": 1,
            "no-status": 1,
        }
        # A second run finds the same status again and changes nothing.
        assert reconcile(fake_client, app.config, older_than=0) == {
            "duplicate": 1,
            "no-status": 1,
        }
    assert stored(app, with_status).state == "needs_review"
    assert stored(app, without_status).state == "pending"


def test_reconcile_survives_authenticate_being_down(app, client, onboarding, fake_client):
    user_access_code = onboarded(onboarding, client, fake_client)
    fake_client.status_error = AuthenticateUnavailable("down")
    with app.app_context():
        assert reconcile(fake_client, app.config, older_than=0) == {"unavailable": 1}
    assert stored(app, user_access_code).state == "pending"


def test_reconcile_cli_prints_counts(app, runner, client, onboarding, fake_client):
    user_access_code = onboarded(onboarding, client, fake_client)
    fake_client.statuses[stored(app, user_access_code).medallion_token] = "verified"
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.exit_code == 0
    assert "recorded: 1" in result.output
    assert stored(app, user_access_code).state == "verified"
    assert "Nothing to re-check." in runner.invoke(args=["reconcile", "--older-than", "0"]).output


def test_reconcile_counts_tokens_authenticate_no_longer_knows_as_rejected(
    app, runner, client, onboarding, fake_client
):
    onboarded(onboarding, client, fake_client)
    fake_client.status_error = AuthenticateRejected("Token not found.", 404)
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.exit_code == 0
    assert "rejected: 1" in result.output


def test_reconcile_cli_exits_non_zero_when_authenticate_is_unreachable(
    runner, client, onboarding, fake_client
):
    onboarded(onboarding, client, fake_client)
    fake_client.status_error = AuthenticateUnavailable("down")
    result = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert result.exit_code == 1
    assert "unavailable: 1" in result.output
