"""The Litestar application: route modules, auth, envelope, OpenAPI — assembled in one place.

To add a domain: write ``northstar_http/routes/<domain>.py`` exporting ``ROUTES`` and add the
module to :data:`ROUTE_MODULES` below (one line). Handlers get ``ctx`` and ``engines`` from
:mod:`northstar_http.deps`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from northstar_adapters.config import HttpSettings, Settings
from northstar_http import cors
from northstar_http.auth import PUBLIC_PATHS, BearerAuthMiddleware
from northstar_http.bodies import strict_json_body
from northstar_http.deps import DEPENDENCIES
from northstar_http.errors import EXCEPTION_HANDLERS, before_send
from northstar_http.observability import Observability
from northstar_http.openapi import openapi_config
from northstar_http.routes import (
    actions,
    analytics,
    archives,
    blackboard,
    canvas,
    chat,
    config,
    console,
    memory,
    migrations,
    notes,
    policies,
    spine,
    system,
    tabular,
    tickets,
    timeline,
    user_data,
)
from northstar_http.tickets import StreamTickets
from northstar_http.timeouts import BodyDeadlineMiddleware, body_timeout_seconds

# Every route module of the service, in one place.
ROUTE_MODULES: Final[tuple[ModuleType, ...]] = (
    system,
    chat,
    spine,
    policies,
    actions,
    memory,
    blackboard,
    config,
    notes,
    tabular,
    analytics,
    canvas,
    timeline,
    tickets,
    console,
    archives,
    migrations,
    user_data,
)


def build_app(
    *,
    state: dict[str, Any],
    body_limit: int,
    on_startup: Sequence[Callable[..., Any]] = (),
    on_shutdown: Sequence[Callable[..., Any]] = (),
) -> Litestar:
    """The app; ``state`` must hold ``settings``, ``verifier``, ``binding`` and ``engines``
    (``engines`` may be filled by an ``on_startup`` hook). Logs, metrics and traces are set up
    from ``settings`` (or taken from ``state["observability"]``, e.g. a test's exporter); the
    stream tickets and CORS (README "Browsers") from ``settings.http``."""
    handlers = [handler for module in ROUTE_MODULES for handler in module.ROUTES]
    settings: Settings | None = state.get("settings")
    state.setdefault("tickets", StreamTickets.for_settings(settings))
    cors_config = cors.cors_config(settings.http if settings is not None else HttpSettings())
    observability: Observability = state.get("observability") or Observability(state.get("settings"))
    state["observability"] = observability
    app = Litestar(
        route_handlers=handlers + observability.route_handlers(),
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            # a drip-fed body gets 408 instead of holding a request task (the head: server.py)
            DefineMiddleware(BodyDeadlineMiddleware, timeout=body_timeout_seconds(state.get("settings"))),
            DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS),
        ],
        before_send=[before_send],
        # JSON bodies strictly typed before Litestar's lax conversion (bodies.py)
        before_request=strict_json_body,
        request_max_body_size=body_limit,
        openapi_config=openapi_config(),
        cors_config=cors_config,
        logging_config=observability.logging_config(),
        # metrics and tracing first up and last down, so startup and shutdown work is seen
        on_startup=[observability.start, *on_startup],
        on_shutdown=[*on_shutdown, observability.stop],
        state=State(state),
        debug=False,
    )
    # Outermost: every request, routed or not, gets its access line, metrics and span; inside
    # it a refused preflight gets the error envelope.
    app.asgi_handler = observability.middleware(cors.wrap(app.asgi_handler, cors_config))
    return app
