"""Shared helpers of the benchmark harness: stats, free ports, server subprocesses, pinning.

Every figure the harness reports is a ratio against a baseline measured in the same run,
with variants interleaved (the machine is shared and noisy); absolute numbers are context.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS = ROOT / "bench" / "results"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def row(
    bench: str,
    metric: str,
    ours: Any,
    baseline: Any,
    value: float,
    target: str,
    met: bool | None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the table: ``value`` is the ratio compared with ``target``."""
    return {
        "bench": bench,
        "metric": metric,
        "ours": ours,
        "baseline": baseline,
        "ratio": value,
        "target": target,
        "met": met,
        "note": note,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def pinned(cmd: list[str], core: int | None) -> list[str]:
    """``cmd`` pinned to ``core`` with taskset when there is one (and more than one core)."""
    if core is None or shutil.which("taskset") is None or len(cpus()) < 2:
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def lab_data_dir(path: Path) -> str:
    """Prepare a lab data dir with known secrets; returns the JWT secret."""
    path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    (path / "secrets.json").write_text(
        json.dumps({"jwt_hs256_secret": secret, "cursor_secret": secrets.token_urlsafe(32)})
    )
    return secret


def token(secret: str, tenant: str = "t_bench", user: str = "u_bench") -> str:
    from northstar_http.tokens import mint_token

    return mint_token(secret, tenant_id=tenant, sub=user, roles=("member", "admin"))


class Server:
    """A uvicorn server subprocess (``bench/_serve.py``) pinned to one core, stopped by PID."""

    def __init__(self, kind: str, data_dir: Path, core: int | None, extra_env: dict[str, str] | None = None):
        self.kind = kind
        self.port = free_port()
        self.data_dir = data_dir
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
        cmd = pinned([PY, str(ROOT / "bench" / "_serve.py"), kind, str(data_dir), str(self.port)], core)
        self.log = open(data_dir.parent / f"{data_dir.name}-{kind}.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{kind} server did not come up")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
