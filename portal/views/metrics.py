"""Prometheus scrapes at /metrics, for a holder of PORTAL_METRICS_TOKEN only."""

from __future__ import annotations

import hmac

from flask import Blueprint, abort, current_app, request
from werkzeug.wrappers import Response

from portal import metrics
from portal.extensions import csrf
from portal.helpers import no_store
from portal.observability import count_records

bp = Blueprint("metrics", __name__)


# Every method is routed here so that, without the token, any request gets the same 404 as an
# unknown path; CSRF is off for the same reason (a POST would otherwise get a 400).
@bp.route("/metrics", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
@csrf.exempt
def scrape() -> Response:
    """Answer a scrape with every metric, summed over all workers."""
    if not token_matches(request.headers.get("Authorization", "")):
        abort(404)
    if request.method not in ("GET", "HEAD"):
        abort(405)
    body, content_type = metrics.render(count_records)
    return no_store(Response(body, content_type=content_type))


def token_matches(authorization: str) -> bool:
    """Compare "Bearer <token>" in constant time; no token configured matches nothing."""
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        return False
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())
