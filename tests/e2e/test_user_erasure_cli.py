"""``[data_keys] key_file`` and ``northstar erase --user`` end to end on the lab SQLite file: the
key file is created (mode 0600), what the user wrote reaches the database sealed or in their own
partitions, and after the erasure no row of the database holds their plaintext."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import msgspec

from northstar_adapters.compose import build_engines
from northstar_adapters.config import finalize, load_settings
from northstar_core.identity import RequestContext
from northstar_core.notes import NoteIn

ROOT = Path(__file__).resolve().parents[2]
TENANT = "t_forget"
MARKER = "remember-me-not"


def _config(where: Path) -> Path:
    config = where / "northstar.toml"
    config.write_text(
        f'mode = "lab"\ndata_dir = "{where / "data"}"\ncursor_secret = "{"c" * 40}"\n'
        '[jwt]\nhs256_secret = "' + "j" * 40 + '"\n'
        f'[data_keys]\nkey_file = "{where / "keys" / "kek"}"\n'
    )
    return config


async def _populate(config: Path) -> None:
    engines = await build_engines(finalize(load_settings(config, environ={})))
    try:
        for user in ("u_gone", "u_stays"):
            ctx = RequestContext(
                tenant_id=TENANT, mode="lab", user_id=user, roles=("member",), run_id="r1", step_id="s1"
            )
            text = f"{MARKER} {user}"
            await engines.spine.append(
                ctx, {"event_type": "note.added", "source": "ui", "payload": {"t": text}}, client=True
            )
            await engines.chat.post(ctx, "th", role="user", content=text, idempotency_key=f"{user}-1")
            await engines.notes.create(ctx, NoteIn(title=text, tags=["x"], surface_id="s"))
    finally:
        await engines.close()


def _rows_with(where: Path, needle: str) -> int:
    with sqlite3.connect(where / "data" / "northstar.db") as conn:
        rows = conn.execute("SELECT value FROM items WHERE pk LIKE ?", (TENANT + "|%",)).fetchall()
    return sum(1 for (value,) in rows if needle.encode() in bytes(value))


def test_erase_a_user_from_the_command_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    asyncio.run(_populate(config))
    assert stat.S_IMODE((tmp_path / "keys" / "kek").stat().st_mode) == 0o600
    # the spine holds no plaintext of either user; chat and notes do, in their own items
    assert _rows_with(tmp_path, f"{MARKER} u_gone") > 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    base = [sys.executable, "-m", "northstar_http.cli", "--config", str(config)]
    out = tmp_path / "u_gone.jsonl"
    exported = subprocess.run(
        [*base, "export", "--tenant", TENANT, "--user", "u_gone", "--out", str(out)],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    assert exported.returncode == 0, exported.stderr.decode()
    lines = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert {line["t"] for line in lines} == {"header", "event", "chat_message", "note", "end"}
    assert f"{MARKER} u_gone" in repr(lines) and "u_stays" not in repr(lines)
    cli = [*base, "erase", "--tenant", TENANT]
    wrong = subprocess.run(
        [*cli, "--user", "u_gone", "--confirm", "u_stays"], capture_output=True, env=env, cwd=ROOT
    )
    assert wrong.returncode == 1 and b"user_data.invalid_request" in wrong.stderr
    done = subprocess.run(
        [*cli, "--user", "u_gone", "--confirm", "u_gone"], capture_output=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr.decode()
    report = msgspec.json.decode(done.stdout)
    assert report["data_key_shredded"] and report["notes"] == 1 and report["chat_messages_cleared"] == 1
    assert _rows_with(tmp_path, f"{MARKER} u_gone") == 0
    assert _rows_with(tmp_path, f"{MARKER} u_stays") >= 2  # the other user's chat and note
