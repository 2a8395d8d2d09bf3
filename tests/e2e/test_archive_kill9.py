"""``northstar import`` and ``northstar erase`` killed with SIGKILL part-way finish when run again.

A lab deployment on SQLite gets a tenant of a few thousand items; the import of its archive into
a second deployment, and then the erasure of the tenant there, are each killed (``kill -9``)
while they write, as soon as the database shows them under way, and run again (the import with
``--resume``). The copy must then hold exactly the archive's items, and after the erasure none.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from northstar_adapters.compose import build_engines
from northstar_adapters.config import finalize, load_settings
from northstar_core.storage import Put

ROOT = Path(__file__).resolve().parents[2]
TENANT = "t_kill"
SECRET = "c" * 40
PARTITIONS = 40
PER_PARTITION = 100


def _config(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    config = where / "northstar.toml"
    config.write_text(
        f'mode = "lab"\ndata_dir = "{where / "data"}"\ncursor_secret = "{SECRET}"\n'
        '[jwt]\nhs256_secret = "' + "j" * 40 + '"\n'
        f'[connections.lab]\nbackend = "sqlite"\npath = "{where / "data" / "northstar.db"}"\n'
        '[registry]\nconnection = "lab"\nrefresh_seconds = 0.2\n'
    )
    return config


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "northstar_http.cli", "--config", str(config), *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}


def _rows(where: Path) -> int:
    try:
        with sqlite3.connect(where / "data" / "northstar.db") as conn:
            query = "SELECT count(*) FROM items WHERE pk LIKE ?"
            return int(conn.execute(query, (TENANT + "|%",)).fetchone()[0])
    except sqlite3.OperationalError as exc:  # the file is there, its table not yet
        if "no such table" in str(exc):
            return 0
        raise


def _kill_when(command: list[str], under_way: object) -> None:
    """Run ``command`` and SIGKILL it once ``under_way()`` says it is writing."""
    process = subprocess.Popen(command, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"finished before it could be killed: {process.stderr.read().decode()}")
            if under_way():  # type: ignore[operator]
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            raise AssertionError("never got under way")
    finally:
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert process.returncode == -signal.SIGKILL


async def _populate(config: Path) -> None:
    settings = finalize(load_settings(config, environ={}))
    engines = await build_engines(settings)
    try:
        store = await engines.registry.store_for("notes_store", TENANT)
        for p in range(PARTITIONS):
            partition = f"{TENANT}|lab|bulk|{p:03d}"
            for i in range(0, PER_PARTITION, 25):
                await store.write(partition, [Put(f"k#{i + j:04d}", os.urandom(64)) for j in range(25)])
    finally:
        await engines.close()


def test_an_import_and_an_erasure_killed_part_way_complete_when_run_again(tmp_path: Path) -> None:
    source, target = _config(tmp_path / "source"), _config(tmp_path / "target")
    asyncio.run(_populate(source))
    total = _rows(tmp_path / "source")
    assert total == PARTITIONS * PER_PARTITION
    archive = tmp_path / "t_kill.jsonl"
    done = subprocess.run(
        _cli(source, "export", "--tenant", TENANT, "--out", str(archive)), env=_env(), cwd=ROOT
    )
    assert done.returncode == 0

    # import, killed once some but not all items are in
    importing = _cli(target, "import", "--tenant", TENANT, "--in", str(archive))
    (tmp_path / "target" / "data").mkdir(parents=True, exist_ok=True)
    _kill_when(
        importing, lambda: (tmp_path / "target/data/northstar.db").exists() and 0 < _rows(tmp_path / "target")
    )
    partial = _rows(tmp_path / "target")
    assert 0 < partial < total
    again = subprocess.run(importing, env=_env(), cwd=ROOT, capture_output=True)
    assert again.returncode == 1 and b"archive.not_empty" in again.stderr  # not without --resume
    resumed = subprocess.run([*importing, "--resume"], env=_env(), cwd=ROOT, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    report = msgspec.json.decode(resumed.stdout)
    assert report["items"] == total and report["written"] + report["already_present"] == total
    assert report["already_present"] >= partial
    with (
        sqlite3.connect(tmp_path / "source/data/northstar.db") as a,
        sqlite3.connect(tmp_path / "target/data/northstar.db") as b,
    ):
        query = "SELECT pk, sk, value, version FROM items WHERE pk LIKE ? ORDER BY pk, sk"
        assert a.execute(query, (TENANT + "|%",)).fetchall() == b.execute(query, (TENANT + "|%",)).fetchall()

    # erase in the copy, killed once deleting has begun
    erasing = _cli(target, "erase", "--tenant", TENANT, "--confirm", TENANT)
    _kill_when(erasing, lambda: _rows(tmp_path / "target") < total)
    assert _rows(tmp_path / "target") > 0
    finished = subprocess.run(erasing, env=_env(), cwd=ROOT, capture_output=True)
    assert finished.returncode == 0, finished.stderr.decode()
    assert _rows(tmp_path / "target") == 0
    assert _rows(tmp_path / "source") == total  # the source deployment is untouched
