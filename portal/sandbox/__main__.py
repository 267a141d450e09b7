"""Run the sandbox: python -m portal.sandbox [--host 127.0.0.1] [--port 5001]."""

from __future__ import annotations

import argparse
import logging

from werkzeug.serving import run_simple

from . import create_app
from .server import AnonymousRequestHandler


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve the sandbox threaded, without reloader or debugger."""
    parser = argparse.ArgumentParser(prog="python -m portal.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=5001, help="port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_simple(
        args.host,
        args.port,
        create_app(),
        threaded=True,
        use_reloader=False,
        use_debugger=False,
        request_handler=AnonymousRequestHandler,
    )


if __name__ == "__main__":
    main()
