"""Authenticate's HTTP API: one client class, typed results and its own exceptions.

Imports nothing from Flask, so it can be built and tested without an app.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter

from portal import metrics

logger = logging.getLogger(__name__)
LINK_STATUS_ENDPOINT = "/user/medallion/{token}/status"


class AuthenticateError(Exception):
    """Base class for every failure talking to Authenticate."""

    # The call's outcome in the portal_authenticate_requests metric.
    outcome = "unexpected"


class AuthenticateRejected(AuthenticateError):
    """Authenticate refused the input (a 4xx); `message` is its errorMessage, for the user."""

    outcome = "rejected"

    def __init__(self, message: str, status_code: int) -> None:
        # The message may echo what was sent, so it stays out of str(), and so out of logs.
        super().__init__(f"rejected with HTTP {status_code}")
        self.message = message
        self.status_code = status_code


class AuthenticateUnavailable(AuthenticateError):
    """Authenticate could not be reached, timed out, or answered 5xx."""

    outcome = "unavailable"


class AuthenticateUnexpectedResponse(AuthenticateError):
    """Authenticate answered 2xx with a body this client does not understand."""


@dataclass(frozen=True)
class NewUser:
    """The personal data sent once to create a user. Never stored by the portal."""

    first_name: str
    last_name: str
    birth_date: date
    email: str
    middle_name: str | None = None
    phone: str | None = None
    country: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the create-user body, with the birth date as DD-MM-YYYY (contract §3)."""
        return {
            "firstName": self.first_name,
            "middleName": self.middle_name or None,
            "lastName": self.last_name,
            "dob": self.birth_date.strftime("%d-%m-%Y"),
            "email": self.email,
            "phone": self.phone or None,
            "country": self.country or None,
        }

    def __repr__(self) -> str:
        # Keep personal data out of tracebacks and log records that format this object.
        return "NewUser(<redacted>)"


@dataclass(frozen=True)
class CreatedUser:
    user_access_code: str


@dataclass(frozen=True)
class MedallionLink:
    """A Medallion verification link; it expires, so ask for a fresh one when needed."""

    token: str
    jwt: str
    url: str


@dataclass(frozen=True)
class LinkStatus:
    """What Authenticate reports for a Medallion token; `status` is None before any attempt."""

    status: str | None
    verification_method: str | None


def upstream_session(base_url: str, pool_size: int = 32) -> requests.Session:
    """Return a pooled session that reads the environment once, not on every call.

    A default session re-reads the proxy variables and ~/.netrc on each request (about a
    millisecond of CPU per call). The proxy (HTTPS_PROXY, NO_PROXY) and CA bundle
    (REQUESTS_CA_BUNDLE) set for the process are still honoured, read here; netrc
    credentials are not wanted (the API key is the credential). The pool is sized for a
    gunicorn worker's threads, so none of them opens a fresh connection per call.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class AuthenticateClient:
    """Calls Authenticate with one pooled session and a timeout on every request."""

    def __init__(
        self,
        *,
        session: requests.Session,
        base_url: str,
        api_key: str,
        verify_url: str,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        workflow_id: str | None = None,
        status_field: str = "status",
        method_field: str = "verificationMethod",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify_url = verify_url
        self.timeout = (connect_timeout, read_timeout)
        self.workflow_id = workflow_id
        self.status_field = status_field
        self.method_field = method_field

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthenticateClient:
        """Build a client from the portal's AUTHENTICATE_* settings."""
        return cls(
            session=upstream_session(config["AUTHENTICATE_API_URL"]),
            base_url=config["AUTHENTICATE_API_URL"],
            api_key=config["AUTHENTICATE_API_KEY"],
            verify_url=config["AUTHENTICATE_VERIFY_URL"],
            connect_timeout=float(config["AUTHENTICATE_CONNECT_TIMEOUT"]),
            read_timeout=float(config["AUTHENTICATE_READ_TIMEOUT"]),
            workflow_id=config.get("AUTHENTICATE_WORKFLOW_ID") or None,
            status_field=config.get("AUTHENTICATE_STATUS_FIELD") or "status",
            method_field=config.get("AUTHENTICATE_METHOD_FIELD") or "verificationMethod",
        )

    def create_user(self, user: NewUser) -> CreatedUser:
        """Create an Authenticate user and return its UUID.

        Never retried: the call is not idempotent (contract §3), so a blind retry after a
        timeout could create a second billable user. The portal's submit key guards repeats.
        """
        body = self._post("/user/create", user.to_json())
        return CreatedUser(user_access_code=_require_str(body, "userAccessCode"))

    def create_link(self, user_access_code: str, redirect_url: str | None) -> MedallionLink:
        """Ask for a Medallion link that sends the user to `redirect_url` when done."""
        payload: dict[str, Any] = {"userAccessCode": user_access_code}
        if redirect_url:
            payload["redirectURL"] = redirect_url
        if self.workflow_id:
            payload["preferredWorkflowID"] = self.workflow_id
        body = self._post("/user/jwt", payload)
        token = _require_str(body, "token")
        jwt = _require_str(body, "jwt")
        separator = "&" if "?" in self.verify_url else "?"
        url = f"{self.verify_url}{separator}{urlencode({'token': token})}"
        return MedallionLink(token=token, jwt=jwt, url=url)

    def get_link_status(self, token: str) -> LinkStatus:
        """Ask for a Medallion token's status (GET /user/medallion/{token}/status).

        The response schema is undocumented (contract §7), so the keys read are settings.
        """
        path = f"/user/medallion/{quote(token, safe='')}/status"
        # The token is a capability: logs, errors and metrics name the endpoint without it.
        body = self._request("GET", path, None, endpoint=LINK_STATUS_ENDPOINT)
        return LinkStatus(
            status=_optional_str(body, self.status_field),
            verification_method=_optional_str(body, self.method_field),
        )

    def _post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, payload)

    def _request(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Send one request; count it by endpoint (`path` unless named) and outcome."""
        endpoint = endpoint or path
        started = time.perf_counter()
        outcome = AuthenticateError.outcome
        try:
            body = self._send(method, path, endpoint, payload)
            outcome = "ok"
            return body
        except AuthenticateError as exc:
            outcome = exc.outcome
            raise
        finally:
            metrics.observe_authenticate(endpoint, outcome, time.perf_counter() - started)

    def _send(
        self, method: str, path: str, endpoint: str, payload: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=payload,
                headers={"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"},
                timeout=self.timeout,
                # A redirect would resend personal data to another address, or turn a POST
                # into a GET; neither is in the contract, so a 3xx is unexpected.
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            # The exception's type, not its text: requests' messages quote the URL.
            logger.warning("authenticate %s %s timed out: %s", method, endpoint, type(exc).__name__)
            raise AuthenticateUnavailable(f"{endpoint} timed out") from exc
        except requests.RequestException as exc:
            logger.warning("authenticate %s %s failed: %s", method, endpoint, type(exc).__name__)
            raise AuthenticateUnavailable(f"{endpoint} unreachable") from exc
        return self._parse(method, endpoint, response)

    def _parse(self, method: str, endpoint: str, response: requests.Response) -> dict[str, Any]:
        status = response.status_code
        # Bodies are never logged: they can echo the personal data that was sent.
        if status >= 500:
            logger.warning("authenticate %s %s answered %d", method, endpoint, status)
            raise AuthenticateUnavailable(f"{endpoint} answered {status}")
        if status >= 400:
            logger.info("authenticate %s %s rejected the request with %d", method, endpoint, status)
            raise AuthenticateRejected(_error_message(response), status)
        if not 200 <= status < 300:
            raise AuthenticateUnexpectedResponse(f"{endpoint} answered {status}")
        try:
            body = response.json()
        except ValueError as exc:
            raise AuthenticateUnexpectedResponse(
                f"{endpoint} answered a body that is not JSON"
            ) from exc
        if not isinstance(body, dict):
            raise AuthenticateUnexpectedResponse(f"{endpoint} answered JSON that is not an object")
        return body


def _require_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AuthenticateUnexpectedResponse(f"response has no usable {key!r}")
    return value


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthenticateUnexpectedResponse(f"response field {key!r} is not a string")
    return value.strip() or None


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("errorMessage") if isinstance(body, dict) else None
    if isinstance(message, str) and message.strip():
        return message.strip()
    return "The verification service did not accept these details."
