"""Signed, expiring links that carry only a UUID."""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenInvalid(Exception):
    """The token was tampered with, truncated, or signed for another purpose."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is older than its maximum age; `value` is what it carried."""

    def __init__(self, message: str, value: str | None = None) -> None:
        super().__init__(message)
        self.value = value


class LinkSigner:
    """Sign and check UUID links for one purpose (the salt keeps purposes apart)."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=f"portal.{purpose}")

    def dumps(self, user_access_code: str) -> str:
        """Return a URL-safe token for the UUID."""
        return self._serializer.dumps(user_access_code)

    def loads(self, token: str, max_age: int) -> str:
        """Return the UUID in `token`.

        :raises TokenExpired: the token is older than `max_age` seconds.
        :raises TokenInvalid: the token is not one this portal signed for this purpose.
        """
        try:
            value = self._serializer.loads(token, max_age=max_age)
        except SignatureExpired as exc:
            # The signature held, so the payload is genuine: callers may offer a fresh link.
            genuine, value = self._serializer.loads_unsafe(token)
            raise TokenExpired(
                str(exc), value if genuine and isinstance(value, str) else None
            ) from exc
        except BadSignature as exc:
            raise TokenInvalid(str(exc)) from exc
        if not isinstance(value, str):
            raise TokenInvalid("token does not carry a UUID")
        return value

    def peek(self, token: str) -> tuple[bool, object]:
        """Return (signature holds, payload), ignoring age: for keys and diagnostics only."""
        try:
            return self._serializer.loads_unsafe(token)
        except Exception:  # loads_unsafe can still fail on garbage it cannot decode
            return False, None
