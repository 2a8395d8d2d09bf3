"""Start a *serialised* moto server (DynamoDB emulator) on loopback and print its endpoint.

Usage::

    python scripts/emulators/moto_server.py [--host 127.0.0.1] [--port 0]

Prints ``MOTO_ENDPOINT=http://HOST:PORT`` on its first stdout line once the socket is bound,
then serves until SIGTERM/SIGINT.

Why serialised: moto as shipped is not safe under concurrency (a version-checked update can let
two writers win, and a cancelled transaction restores a copy of the whole table, losing other
clients' acknowledged writes; see EMULATORS.md). Every request therefore runs behind one lock
around moto's WSGI application. The server itself is threaded so HTTP keep-alive connections
from many clients stay open while they queue on the lock.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class SerialisedApp:
    """A WSGI app that runs ``app`` for one request at a time, response body included."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            body = self.app(environ, start_response)
            try:
                # Materialise the body under the lock: moto may build it lazily from state.
                return list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--exit-on-stdin-close",
        action="store_true",
        help="stop when stdin reaches EOF (the parent died, even by SIGKILL): no orphan servers",
    )
    args = parser.parse_args(argv)
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    app = SerialisedApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    host, port = server.server_address[:2]
    print(f"MOTO_ENDPOINT=http://{host}:{port}", flush=True)

    def _stop(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.exit_on_stdin_close:

        def _watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            server.shutdown()

        threading.Thread(target=_watch_stdin, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
