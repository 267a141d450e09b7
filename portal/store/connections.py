"""Pooled connections: standalone statements, one retry on a dead one, SQLite's write queue."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from portal.extensions import db

T = TypeVar("T")

# INSERT constructs that know ON CONFLICT, by dialect: the two databases the portal runs on.
UPSERT_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def single_statements() -> Connection:
    """Return a pooled connection for statements that stand alone (close it, or use `with`).

    Outside the ORM session (nothing to set up or tear down); on PostgreSQL in autocommit, so
    each statement is its own transaction, with no BEGIN and COMMIT or ROLLBACK round trips.
    On SQLite a SELECT opens no transaction, and a write is committed by `commit()`.
    """
    connection = db.engine.connect()
    if connection.dialect.name == "postgresql":
        return connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


def once_more_if_disconnected(work: Callable[[], T]) -> T:
    """Run `work`; if its pooled connection was dead, run it once more on a fresh one.

    The pool pings a connection when it is checked out, but the database can still go away
    between the ping and the statement (a restart, a failover), and then the statement
    fails. SQLAlchemy then replaces every pooled connection. Only for work that is safe to
    repeat: reads, and event recording, which is idempotent by event id.
    """
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        db.session.rollback()
        return work()


# Per process and database file: a thread lock, and an open lock file (None for in-memory).
_turns: dict[tuple[int, str], tuple[threading.Lock, int | None]] = {}
_turns_guard = threading.Lock()
_this_thread = threading.local()


@contextmanager
def write_turn(connection: Connection) -> Iterator[None]:
    """Hold SQLite's one write slot for the block, waking the next writer as soon as it ends.

    SQLite lets one transaction write at a time; the others wait in its busy handler, which
    sleeps and retries (2 to 10 ms late after each release), so the slot sits idle most of the
    time. Writers that queue here instead, on a thread lock and an flock(2) shared with the
    other server processes, start the moment the previous one commits. Only a queue: SQLite's
    own locking still guards the data. Other databases queue writers themselves.
    """
    if connection.dialect.name != "sqlite" or getattr(_this_thread, "has_turn", False):
        # A write nested in this thread's turn (another session) goes ahead, under SQLite's lock.
        yield
        return
    lock, lock_file = _turn(connection.engine.url.database or "")
    with lock:
        _this_thread.has_turn = True
        try:
            if lock_file is not None:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if lock_file is not None:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
        finally:
            _this_thread.has_turn = False


def _turn(database: str) -> tuple[threading.Lock, int | None]:
    # Keyed by process too: a lock file opened before a fork would be one lock for all.
    key = (os.getpid(), database)
    with _turns_guard:
        if key not in _turns:
            in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
            lock_file = (
                None if in_memory else os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o600)
            )
            _turns[key] = (threading.Lock(), lock_file)
        return _turns[key]
