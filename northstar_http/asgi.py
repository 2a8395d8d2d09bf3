"""The service as an importable, zero-argument ASGI app factory, for servers that load the app
themselves::

    uvicorn --factory northstar_http.asgi:create_app --host 0.0.0.0 --port 8787
    litestar --app northstar_http.asgi:create_app run --host 0.0.0.0 --port 8787
    northstar serve --workers 4     # each worker process builds its app with this factory

``create_app()`` reads the configuration exactly as the ``northstar`` command does: the file
named by ``$NORTHSTAR_CONFIG`` (``northstar serve --config`` passes it to its workers that way),
else ``./northstar.toml`` if present, plus the ``NORTHSTAR_*`` environment variables. Engines are
opened when the server starts the app (its lifespan); before that, the factory makes the checks
``northstar serve`` makes before it listens, so a deployment that may not run fails the
server's startup with the same one-line message (exit status 3).

What ``northstar serve`` adds around the same app, and a foreign server lacks: the bounded time
to receive a request head (408, :mod:`northstar_http.server`; the body deadline is in the app
and always applies), and the lab banner with a token. Open SSE streams are ended on SIGTERM and
SIGINT under any server that stops on those signals through a Python signal handler (uvicorn,
hypercorn): the app chains its own handler in front of the server's (see
:func:`end_streams_on_signals`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, Final, NoReturn

from litestar import Litestar

from northstar_adapters.compose import build_registry
from northstar_adapters.config import ConfigError, Settings, finalize, load_settings
from northstar_core.errors import NorthstarError
from northstar_core.routing import RoutingError
from northstar_http import bootstrap
from northstar_http.sse import close_event_streams

log = logging.getLogger("northstar")

# uvicorn's exit status for a server that could not start: a supervisor (uvicorn's own
# multi-process one included) stops instead of restarting a worker that fails the same way.
STARTUP_FAILURE: Final = 3
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def create_app() -> Litestar:
    """The service over the configuration of the environment (see the module doc)."""
    # A refusal is one line on stderr and the server's startup-failure status: a traceback
    # through the server's loader or lifespan would bury the line that matters.
    try:
        settings = finalize(load_settings())
    except ConfigError as exc:
        _refuse(f"configuration: {exc}")
    _preflight(settings)
    app = bootstrap.create_app(settings)
    app.on_startup.append(end_streams_on_signals)
    return app


def _refuse(message: str) -> NoReturn:
    print(f"northstar: {message}", file=sys.stderr)
    raise SystemExit(STARTUP_FAILURE)


def _preflight(settings: Settings) -> None:
    """What ``northstar serve`` checks before it listens: the registry opens, configured routes
    are seeded, and the deployment may run in its mode. The server calls the factory from
    inside its event loop, so the check runs on a loop of its own, in a thread."""

    async def check() -> None:
        registry = await build_registry(settings)
        await registry.close()

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="northstar-preflight") as pool:
            pool.submit(asyncio.run, check()).result()
    except RoutingError as exc:
        _refuse(str(exc))
    except NorthstarError as exc:
        _refuse(f"{exc.code}: {exc.message}")


def end_streams_on_signals(app: Litestar) -> None:
    """Chain a handler in front of the server's SIGINT/SIGTERM handlers that ends the app's
    open event streams as soon as the signal arrives; the server's handler then runs as before.

    A server stops gracefully by waiting for its open responses to complete, and an SSE
    response never completes by itself: without this, the server would wait out its graceful
    timeout (uvicorn's default: for ever) and then cut every stream. Only handlers that are
    Python callables are chained (those are the servers that stop gracefully on the signal).
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            # from a signal handler only the thread-safe call is safe to make on the loop
            if not loop.is_closed():
                loop.call_soon_threadsafe(close_event_streams, app)
            previous(signum, frame)

        signal.signal(sig, handler)
