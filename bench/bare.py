"""The baseline: a bare Flask app with the portal's two hot URLs and nothing behind them.

Same paths as the portal, so the load tool sends byte-for-byte the same requests to both.
Serve with gunicorn: `bench.bare:app`.
"""

from __future__ import annotations

from flask import Flask, abort, jsonify, request

app = Flask(__name__)


@app.post("/webhooks/authenticate/<secret>")
def receive(secret: str):
    """Parse the JSON body and answer a small JSON 200, as the portal does on success."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400)
    return jsonify(outcome="recorded"), 200


@app.get("/status/<token>.json")
def poll(token: str):
    """Answer a small JSON document shaped like the portal's status poll."""
    return jsonify(
        state="pending",
        title="Waiting for you to start verification",
        detail="Continue to the verification page to check your identity.",
        terminal=False,
        step=1,
    )
