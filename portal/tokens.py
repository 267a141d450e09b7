"""Signed, expiring links that carry only a UUID."""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenInvalid(Exception):
    """The token was tampered with, truncated, or signed for another purpose."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is older than its maximum age."""


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
            raise TokenExpired(str(exc)) from exc
        except BadSignature as exc:
            raise TokenInvalid(str(exc)) from exc
        if not isinstance(value, str):
            raise TokenInvalid("token does not carry a UUID")
        return value
