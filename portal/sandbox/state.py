"""Thread-safe in-memory users and Medallion tokens of one sandbox app."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app

# UACs that the hosted mock accepts without a prior /user/create (contract §9). The last
# one is deliberately not a valid UUID; the mock accepts it, so the sandbox does too.
MOCK_FIXTURE_UACS = frozenset(
    {
        "100385a1-4308-49db-889f-9a898fa88c21",
        "2d91a19f-d07b-48f0-912f-886ed67009dd",
        "26682cb8-d672-4e0a-a26d-3b9a7cafab64",
        "a423efc3-f12d-4f85-92a6-2a35129c5285",
        "9cg686b3-ccb3-497c-a298-3830ea8a1c96",
    }
)


@dataclass
class User:
    """A created user; profile holds personal data and must never be logged or exposed."""

    user_access_code: str
    profile: dict[str, Any] = field(repr=False)
    completed: bool = False
    last_status: str | None = None


@dataclass
class Token:
    """A Medallion link issued by /user/jwt, with what the hosted page has done with it."""

    token: str
    jwt: str
    user_access_code: str
    redirect_url: str | None
    workflow_id: str | None
    expires_at: datetime
    started_at: datetime | None = None
    held_started: dict[str, Any] | None = None
    attempts: int = 0

    def expired(self, now: datetime | None = None) -> bool:
        """Tell whether the token's TTL has run out (a TTL of 0 expires at once)."""
        return (now or datetime.now(UTC)) >= self.expires_at


def _b64(data: bytes) -> str:
    """Encode bytes as unpadded base64url, the alphabet JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SandboxState:
    """Hold users and tokens behind one lock, since the app is served threaded."""

    def __init__(self, webhook_urls: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._webhook_urls = webhook_urls
        self._users: dict[str, User] = {}
        self._tokens: dict[str, Token] = {}
        self._jwts: dict[str, str] = {}
        # Per-instance key: the jwt only has to look like one, nobody verifies it.
        self._jwt_key = secrets.token_bytes(32)

    def add_user(self, profile: dict[str, Any]) -> str:
        """Store a new user under a fresh uuid4, even if an identical profile exists."""
        code = str(uuid.uuid4())
        with self._lock:
            self._users[code] = User(code, dict(profile))
        return code

    def ensure_fixture_user(self, code: str) -> None:
        """Create a profile-less user for a mock fixture UAC on first use."""
        with self._lock:
            self._users.setdefault(code, User(code, {}))

    def get_user(self, code: str) -> User | None:
        """Return the user with this access code, or None."""
        with self._lock:
            return self._users.get(code)

    def user_codes(self) -> list[str]:
        """List every user access code in creation order."""
        with self._lock:
            return list(self._users)

    def issue_token(
        self, code: str, redirect_url: str | None, workflow_id: str | None, ttl: int
    ) -> Token:
        """Create a token and a JWT-shaped long form for the user; earlier tokens stay valid."""
        token = str(uuid.uuid4())
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {"token": token, "exp": int(expires_at.timestamp())}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        digest = hmac.new(self._jwt_key, f"{header}.{payload}".encode(), hashlib.sha256)
        jwt = f"{header}.{payload}.{_b64(digest.digest())}"
        record = Token(token, jwt, code, redirect_url, workflow_id, expires_at)
        with self._lock:
            self._tokens[token] = record
            self._jwts[jwt] = token
        return record

    def find_token(self, value: str) -> Token | None:
        """Return the token given either its short form or its jwt, or None."""
        with self._lock:
            return self._tokens.get(self._jwts.get(value, value))

    def begin(
        self, token: Token, make: Callable[[datetime], dict[str, Any]], hold: bool
    ) -> dict[str, Any] | None:
        """Build the "started" event on a token's first view; return it unless held back.

        One lock covers the whole step so concurrent first views create a single event.
        """
        with self._lock:
            if token.started_at is not None:
                return None
            token.started_at = datetime.now(UTC)
            envelope = make(token.started_at)
            self._users[token.user_access_code].last_status = envelope["order"]["status"]
            if hold:
                token.held_started = envelope
                return None
            return envelope

    def record_outcome(self, token: Token, status: str, completes: bool) -> dict[str, Any] | None:
        """Apply a tester's choice to the user; return any held-back "started" event."""
        with self._lock:
            token.attempts += 1
            user = self._users[token.user_access_code]
            user.last_status = status
            user.completed = user.completed or completes
            held, token.held_started = token.held_started, None
            return held

    def webhook_urls(self) -> tuple[str, ...]:
        """Return the URLs deliveries go to now (set by config or POST /company/webhook)."""
        with self._lock:
            return self._webhook_urls

    def set_webhook_url(self, url: str) -> None:
        """Point future deliveries, including queued ones, at url alone."""
        with self._lock:
            self._webhook_urls = (url,)


def get_state() -> SandboxState:
    """Return the current sandbox app's state."""
    state: SandboxState = current_app.extensions["sandbox.state"]
    return state
