"""The portal as gunicorn serves it in the benchmarks: `bench.wsgi_portal:app`.

Production-like: not debug, not testing, so the portal's own check that real secrets are
set applies. `bench/run.py` generates the secrets for each run and passes them, with the
database URL, in the environment:

- PORTAL_SECRET_KEY, PORTAL_AUTHENTICATE_API_KEY, PORTAL_WEBHOOK_SECRET (read by the portal)
- BENCH_DATABASE_URL: a SQLite file in a temporary folder, or a PostgreSQL database made
  for the run.
"""

from __future__ import annotations

import os

from flask import Flask

from portal import create_app


def build_app(database_url: str | None = None) -> Flask:
    """Return the portal bound to the benchmark database (the argument, else the env)."""
    url = database_url or os.environ["BENCH_DATABASE_URL"]
    # SQLALCHEMY_DATABASE_URI too, so an instance/config.py cannot point the run elsewhere.
    return create_app(
        {"DATABASE_URL": url, "SQLALCHEMY_DATABASE_URI": url, "DEBUG": False, "TESTING": False}
    )


if os.environ.get("BENCH_DATABASE_URL"):
    app = build_app()
