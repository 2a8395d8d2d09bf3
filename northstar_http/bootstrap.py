"""The HTTP shell's wiring: settings → token verifier, server binding, and the app over Engines.

Engines themselves come from the composition root, :mod:`northstar_adapters.compose` (which an
embedding agent uses directly, without this shell). ``create_app(settings)`` is what
``northstar serve`` (uvicorn) and the tests run. Engines are built on startup inside the
server's event loop (store clients bind to the loop that opened them); tests may pass ready
``engines`` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar

from northstar_adapters.compose import build_engines
from northstar_adapters.config import Settings, finalize
from northstar_core.engines import Engines
from northstar_core.identity import ServerBinding
from northstar_core.routing import LAB_ONLY_BACKENDS
from northstar_http.app import build_app
from northstar_http.auth import TokenVerifier
from northstar_http.sse import STREAMS_STATE_KEY, EventStreams, close_event_streams

log = logging.getLogger("northstar")

def build_verifier(settings: Settings) -> TokenVerifier:
    j = settings.jwt
    common: dict[str, Any] = {
        "hs256_secret": j.hs256_secret,
        "jwks_url": j.jwks_url,
        "audience": j.audience,
        "issuer": j.issuer,
        "leeway": j.leeway_seconds,
    }
    if j.jwks_file:
        return TokenVerifier.from_jwks_file(j.jwks_file, **common)
    return TokenVerifier(**common)


def server_binding(settings: Settings) -> ServerBinding:
    # A lab deployment holds lab data only: tokens claiming another mode are refused.
    return ServerBinding(tenant_id=settings.bind_tenant_id, mode="lab" if settings.is_lab else None)


def lab_banner(engines: Engines) -> str | None:
    registry = engines.registry
    labs = sorted(
        {registry.label_of(r) for r, _ in registry.routes() if registry.backend_of(r) in LAB_ONLY_BACKENDS}
    )
    if not labs:
        return None
    return (
        "*** LAB MODE: data is served by " + ", ".join(labs)
        + " — not for production; responses carry X-Northstar-Backend ***"
    )


def create_app(settings: Settings, *, engines: Engines | None = None) -> Litestar:
    """The service for ``settings`` (lab defaults are filled here)."""
    settings = finalize(settings)
    state: dict[str, Any] = {
        "settings": settings,
        "verifier": build_verifier(settings),
        "binding": server_binding(settings),
        "engines": engines,
        "owns_engines": engines is None,
        # open SSE responses, ended together when the server shuts down (northstar_http/sse.py)
        STREAMS_STATE_KEY: EventStreams(),
    }

    async def start(app: Litestar) -> None:
        if app.state.engines is None:
            app.state.engines = await build_engines(settings)
        banner = lab_banner(app.state.engines)
        if banner:
            log.warning(banner)

    async def stop(app: Litestar) -> None:
        # Servers that do not end the streams when their shutdown begins reach this only after
        # their own timeout: end whatever is still open before the stores close under it.
        close_event_streams(app)
        if app.state.owns_engines and app.state.engines is not None:
            await app.state.engines.close()

    return build_app(state=state, body_limit=settings.http.body_limit, on_startup=[start], on_shutdown=[stop])
