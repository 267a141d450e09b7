"""The submit baseline: bare Flask making the portal's upstream call, and nothing else.

GET / answers a small form page with the two hidden fields the load reads; POST / sends the
form to the sandbox's /user/create, through one pooled requests session per process as the
portal's client does, and answers 303 to the next step, as the portal's submit does. No
session, CSRF, validation, database or templates: portal latency minus this app's latency
is what the portal adds over the upstream. Serve with gunicorn: `bench.bare_submit:app`.

- BENCH_SANDBOX_URL: the sandbox's base URL
- BENCH_SANDBOX_API_KEY: its API key (sent as the portal sends it, a Bearer token)
"""

from __future__ import annotations

import os
import secrets
from datetime import date

import requests
from flask import Flask, abort, redirect, request
from werkzeug.wrappers import Response

app = Flask(__name__)
UPSTREAM = os.environ.get("BENCH_SANDBOX_URL", "http://127.0.0.1:5001").rstrip("/")
API_KEY = os.environ.get("BENCH_SANDBOX_API_KEY", "sandbox-api-key")
TIMEOUT = (3.05, 10.0)  # the portal's default connect and read timeouts
session = requests.Session()

FORM = (
    '<!doctype html><title>Verify</title><form method="post" action="/">'
    '<input name="csrf_token" type="hidden" value="{csrf}">'
    '<input name="submit_key" type="hidden" value="{key}"></form>'
)
FIELDS = {
    "firstName": "first_name",
    "middleName": "middle_name",
    "lastName": "last_name",
    "email": "email",
    "phone": "phone",
    "country": "country",
}


@app.get("/")
def form() -> str:
    return FORM.format(csrf=secrets.token_urlsafe(32), key=secrets.token_urlsafe(32))


@app.post("/")
def submit() -> Response:
    """Create the user upstream from the posted form, then send the browser on."""
    try:
        born = date.fromisoformat(request.form.get("birth_date", ""))
    except ValueError:
        abort(422)
    body = {key: request.form.get(name) or None for key, name in FIELDS.items()}
    body["dob"] = born.strftime("%d-%m-%Y")
    answer = session.post(
        f"{UPSTREAM}/user/create",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    if answer.status_code != 200:
        abort(502)
    code = answer.json().get("userAccessCode")
    if not isinstance(code, str):
        abort(502)
    return redirect(f"/status/{code}/continue", 303)
