"""Serve one benchmark app with uvicorn (1 worker, same settings for every variant).

    python bench/_serve.py full|bare DATA_DIR PORT

* ``full`` — the Northstar service exactly as ``northstar serve`` builds it (lab: every kind on
  the SQLite file in DATA_DIR; WAL, synchronous FULL).
* ``bare`` — the P1 baseline: a bare Litestar app whose POST handler does the same single
  SQLite insert on a file in DATA_DIR with the same journal and synchronous setting.

Access logs are off for both (uvicorn ``access_log=False``, level warning) so the comparison
measures request handling, not log I/O.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Response, get, post


def bare_app(data_dir: Path) -> Litestar:
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / "bare.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (thread_id TEXT NOT NULL, seq INTEGER PRIMARY KEY,"
        " body BLOB NOT NULL)"
    )
    lock = threading.Lock()

    @post("/chat/threads/{thread_id:str}/messages", sync_to_thread=True)
    def post_message(thread_id: str, data: dict[str, Any]) -> Response[dict[str, Any]]:
        body = msgspec.json.encode(data)
        with lock:  # one connection; each insert is its own (autocommit) transaction
            cur = conn.execute("INSERT INTO messages (thread_id, body) VALUES (?, ?)", (thread_id, body))
        return Response({"thread_id": thread_id, "seq": cur.lastrowid}, status_code=201)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([post_message, healthz], debug=False)


def full_app(data_dir: Path) -> Litestar:
    from northstar_adapters.config import finalize, load_settings
    from northstar_http.bootstrap import create_app

    # Access log off, as the bare baseline runs uvicorn with access_log=False.
    overrides = {"data_dir": str(data_dir), "mode": "lab", "log": {"access": False}}
    settings = finalize(load_settings(overrides=overrides))
    return create_app(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description="a P1 server: the full app or the bare baseline")
    parser.add_argument("kind", choices=("full", "bare"))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = bare_app(args.data_dir) if args.kind == "bare" else full_app(args.data_dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, workers=1)


if __name__ == "__main__":
    main()
