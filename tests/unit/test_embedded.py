"""The composition root an embedding agent uses: one call, the server's configuration, no shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from northstar_adapters.compose import open_engines
from northstar_adapters.config import ConfigError
from northstar_core import Engines, NorthstarError, RequestContext

CTX = RequestContext(tenant_id="t_embed", mode="lab", user_id="u_agent", roles=("member",))


async def test_one_call_opens_lab_engines_that_are_durable_across_reopening(tmp_path: Path) -> None:
    engines = await open_engines(data_dir=tmp_path / "data", environ={})
    assert isinstance(engines, Engines)
    posted = await engines.chat.post(CTX, "th_1", role="user", content="hello", idempotency_key="k1")
    await engines.close()

    again = await open_engines(data_dir=tmp_path / "data", environ={})
    try:
        page = await again.chat.list_messages(CTX, "th_1")
        assert [m.content for m in page.items] == ["hello"]
        replay = await again.chat.post(CTX, "th_1", role="user", content="hello", idempotency_key="k1")
        assert replay.message.message_id == posted.message.message_id
    finally:
        await again.close()
    assert (tmp_path / "data" / "northstar.db").is_file()


async def test_it_reads_the_same_configuration_file_as_the_server(tmp_path: Path) -> None:
    config = tmp_path / "northstar.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "d"}"\n'
        '[connections.mem]\nbackend = "memory"\nname = "embedded-test"\n'
        '[registry]\nconnection = "mem"\n'
    )
    engines = await open_engines(config, environ={})
    try:
        store = await engines.registry.store_for("chat_store", "t_embed")
        assert (store.backend, store.route.connection) == ("memory", "mem")
    finally:
        await engines.close()


async def test_it_refuses_what_the_server_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cursor_secret"):
        await open_engines(environ={"NORTHSTAR_MODE": "saas"}, data_dir=tmp_path)
    engines = await open_engines(data_dir=tmp_path, environ={})
    try:
        with pytest.raises(NorthstarError) as info:
            no_roles = RequestContext(tenant_id="t_embed", mode="lab", user_id="u")
            await engines.chat.post(no_roles, "th", role="user", content="x")
        assert info.value.code == "auth.forbidden_role"
    finally:
        await engines.close()


def test_embedding_imports_no_web_framework(tmp_path: Path) -> None:
    code = (
        "import asyncio, json, sys\n"
        "from northstar_adapters.compose import open_engines\n"
        f"engines = asyncio.run(open_engines(data_dir={str(tmp_path)!r}, environ={{}}))\n"
        "asyncio.run(engines.close())\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'litestar', 'northstar_http', 'uvicorn', 'jwt'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
