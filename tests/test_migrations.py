import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from portal import create_app
from portal.extensions import db
from portal.migrating import init_migrations
from tests.conftest import base_config

TABLES = {
    "submissions",
    "verifications",
    "webhook_events",
    "admin_users",
    "audit_log",
    "daily_counts",
    "decision_time_counts",
}


@pytest.fixture(autouse=True)
def logging_state():
    """Alembic's env.py runs logging.config.fileConfig; put every logger back afterwards."""
    manager = logging.root.manager
    loggers = [logging.root] + [
        logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(lg, lg.disabled, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for logger, disabled, level, handlers, propagate in saved:
        logger.disabled = disabled
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture
def empty_app(database_url):
    """An app on each backend whose database has no tables yet."""
    app = create_app(base_config(database_url))
    init_migrations(app)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def table_names():
    return set(inspect(db.engine).get_table_names())


def test_upgrade_builds_the_schema_the_models_describe(empty_app):
    assert table_names() == set()

    upgrade()

    assert table_names() == TABLES | {"alembic_version"}
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_upgrade_schema_has_the_models_unique_keys_and_indexes(empty_app):
    upgrade()

    inspector = inspect(db.engine)
    unique = {
        table: [c["column_names"] for c in inspector.get_unique_constraints(table)]
        for table in ("verifications", "webhook_events")
    }
    indexes = {index["name"] for index in inspector.get_indexes("webhook_events")}
    assert unique == {"verifications": [["user_access_code"]], "webhook_events": [["event_id"]]}
    assert {"ix_webhook_events_uac_date", "ix_webhook_events_received_at"} <= indexes


def test_downgrade_to_base_removes_the_tables(empty_app):
    upgrade()

    downgrade(revision="base")

    assert table_names() == {"alembic_version"}
    assert current_revision() is None


def current_revision():
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_upgrade_after_downgrade_rebuilds_the_schema(empty_app):
    upgrade()
    head = current_revision()
    downgrade(revision="base")

    upgrade()

    assert current_revision() == head is not None
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), db.metadata) == []


def test_upgrade_in_a_bare_process_leaves_the_portal_loggers_working(empty_app):
    """`make run` migrates in-process before serving; the portal must still log after that."""
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("portal.views.webhooks")
    logging.root.handlers[:] = []  # as in a fresh process: nothing has configured logging

    upgrade()
    logger.addHandler(handler)
    try:
        logger.warning("still logging")
    finally:
        logger.removeHandler(handler)

    assert [record.getMessage() for record in seen] == ["still logging"]


def test_upgrade_to_the_rollup_counts_the_records_already_stored(empty_app):
    upgrade(revision="0005")
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO verifications (user_access_code, state, created_at, updated_at,"
                " link_issued_at, decided_at) VALUES"
                " ('a', 'verified', '2026-03-01 10:00:00', '2026-03-01 10:00:00',"
                "  '2026-03-01 10:01:00', '2026-03-02 09:00:00'),"
                " ('b', 'pending', '2026-03-01 23:59:59', '2026-03-01 23:59:59', NULL, NULL)"
            )
        )

    upgrade()

    with db.engine.connect() as connection:
        days = connection.execute(
            text("SELECT day, state, created, linked, decided FROM daily_counts ORDER BY 1, 2")
        ).all()
        times = connection.execute(text("SELECT day, decided FROM decision_time_counts")).all()
    assert [(str(day), *rest) for day, *rest in days] == [
        ("2026-03-01", "pending", 1, 0, 0),
        ("2026-03-01", "verified", 1, 1, 0),
        ("2026-03-02", "verified", 0, 0, 1),
    ]
    assert [(str(day), n) for day, n in times] == [("2026-03-02", 1)]
