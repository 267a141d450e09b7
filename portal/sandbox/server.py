"""Serving helpers that never log a client IP address."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class AnonymousRequestHandler(WSGIRequestHandler):
    """Request handler whose access log shows "-" where the client address would be."""

    def address_string(self) -> str:
        """Hide the client address; werkzeug also uses this value for REMOTE_ADDR."""
        return "-"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the request line without its query string."""
        # The query carries the Medallion link token (or jwt), a capability; keep it out of logs.
        full_path = getattr(self, "path", None)
        if full_path is None:
            super().log_request(code, size)
            return
        self.path = full_path.partition("?")[0]
        try:
            super().log_request(code, size)
        finally:
            self.path = full_path


def serve(
    app: Flask, host: str = "127.0.0.1", port: int = 0
) -> tuple[BaseWSGIServer, threading.Thread]:
    """Serve app threaded from a daemon thread; port 0 picks a free port (see server.port).

    Stop it with server.shutdown(); the thread then closes the listening socket itself.
    """
    server = make_server(host, port, app, threaded=True, request_handler=AnonymousRequestHandler)

    def run() -> None:
        try:
            server.serve_forever(poll_interval=0.1)
        finally:
            server.server_close()

    thread = threading.Thread(target=run, name=f"sandbox-http-{server.port}", daemon=True)
    thread.start()
    return server, thread
