"""Shared helpers of the benchmark harness: stats, free ports, server subprocesses, pinning.

Every figure the harness reports is a ratio against a baseline measured in the same run,
with variants interleaved (the machine is shared and noisy); absolute numbers are context.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from northstar_core.routing import Connection

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
    """A server subprocess pinned to one core, up once ``/healthz`` answers, stopped by PID:
    a bench app (``bench/_serve.py``, :meth:`bench_app`) or the shipped ``northstar serve``
    (:meth:`northstar_serve`)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        data_dir: Path,
        core: int | None,
        extra_env: dict[str, str] | None = None,
        *,
        stop_seconds: float = 10.0,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = data_dir
        self.stop_seconds = stop_seconds
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
        self.log = open(data_dir.parent / f"{data_dir.name}-{name}.log", "wb")
        self.proc = subprocess.Popen(
            pinned([*cmd, "--port", str(self.port)], core), env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} server exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} server did not come up")

    @classmethod
    def bench_app(
        cls, kind: str, data_dir: Path, core: int | None, extra_env: dict[str, str] | None = None
    ) -> Server:
        """``bench/_serve.py``'s ``kind`` app under plain uvicorn."""
        cmd = [PY, str(ROOT / "bench" / "_serve.py"), kind, str(data_dir)]
        return cls(kind, cmd, data_dir, core, extra_env)

    @classmethod
    def northstar_serve(
        cls, data_dir: Path, core: int | None, extra_env: dict[str, str] | None = None
    ) -> Server:
        """``northstar serve`` (lab, one process) on ``data_dir``; a graceful stop may have
        thousands of open streams to end, so it is given longer."""
        cmd = [PY, "-m", "northstar_http.cli", "serve", "--data-dir", str(data_dir), "--log-level", "warning"]
        return cls("serve", cmd, data_dir, core, extra_env, stop_seconds=30.0)

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
                self.proc.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- P4: one atomic append, adapter vs hand-written raw SDK, interleaved ---------------------

Append = Callable[[int], Awaitable[None]]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """n, total, mean, p50 and p95 (ms) of per-operation durations in seconds."""
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "total_s": round(sum(samples), 4),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 3),
    }


async def interleave(variants: dict[str, Append], n: int) -> dict[str, dict[str, float]]:
    """Warm each variant once, then time ``n`` calls of each, rotating the order every round so
    machine noise (shared cores) hits every variant alike; a latency summary per variant."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for one in variants.values():
        await one(-1)  # warm clients, connections and caches
    names = list(variants)
    for i in range(n):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            await variants[name](i)
            samples[name].append(time.perf_counter() - start)
    return {name: latency_summary(values) for name, values in samples.items()}


def p4_report(bench: str, results: dict[str, dict[str, float]], n: int, **context: str) -> dict[str, Any]:
    """The P4 report: the adapter's p50 against the raw-SDK variants'."""
    adapter = results["adapter"]["p50_ms"]
    return {
        "bench": bench,
        **context,
        "appends": n,
        "ratio_basis": "p50 latency, variants interleaved per append",
        "results": results,
        "ratio_adapter_vs_raw_full": round(adapter / results["raw_full"]["p50_ms"], 3),
        "ratio_adapter_vs_raw_batch": round(adapter / results["raw_batch"]["p50_ms"], 3),
        "python": platform.python_version(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_p4_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, summary in report["results"].items():
        print(f"{name:10s} p50 {summary['p50_ms']:8.3f} ms  p95 {summary['p95_ms']:8.3f} ms")
    print(f"adapter / raw_full  = {report['ratio_adapter_vs_raw_full']}")
    print(f"adapter / raw_batch = {report['ratio_adapter_vs_raw_batch']}")
    print(f"wrote {out}")


# --- one run per backend -----------------------------------------------------------------------


@contextlib.contextmanager
def bench_connection(backend: str, name: str, **params: Any) -> Iterator[Connection]:
    """A connection named ``name`` on ``backend`` for one benchmark run, in a namespace of its
    own: a fresh memory store, a SQLite file in a temporary directory, or an emulator started
    for the run and stopped after it. ``params`` are added to the backend's own."""
    from northstar_core.routing import Connection

    tag = secrets.token_hex(4)
    if backend == "memory":
        yield Connection(name=name, backend="memory", params={"name": f"{name}-{tag}", **params})
    elif backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"ns-bench-{name}-") as tmp:
            path = str(Path(tmp) / f"{name}.db")
            yield Connection(name=name, backend="sqlite", params={"path": path, **params})
    elif backend == "dynamodb":
        from tests.emulators.moto import TEST_ENV, MotoServer

        os.environ.update(TEST_ENV)
        server = MotoServer.start()
        try:
            base = {"endpoint_url": server.endpoint, "table_prefix": f"{name}{tag}_"}
            yield Connection(name=name, backend="dynamodb", params={**base, **params})
        finally:
            server.stop()
    elif backend == "firestore":
        from tests.emulators.firestore import launcher

        emulator = launcher().start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        try:
            yield Connection(name=name, backend="firestore", params={"project": f"{name}-{tag}", **params})
        finally:
            emulator.stop()
    elif backend == "cosmos":
        from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV, CosmosServer

        os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
        cosmos = CosmosServer.start()
        try:
            base = {"url": cosmos.endpoint, "database": f"{name}{tag}"}
            yield Connection(name=name, backend="cosmos", params={**base, **params})
        finally:
            cosmos.stop()
    else:
        raise ValueError(f"no benchmark setup for backend {backend}")


# Backends whose tables / containers a benchmark creates before use; the others need none.
PROVISIONED: Final = frozenset({"dynamodb", "cosmos"})


def run_per_backend(
    bench: str,
    backends: Sequence[str],
    measure: Callable[[str], dict[str, Any]],
    rows_for: Callable[[str, dict[str, Any]], list[dict[str, Any]]],
    out_file: str,
    label: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """``measure(backend)`` for each backend, one failing never hiding the others (a failed
    row instead); the result, with each backend's wall time, written to ``bench/results``."""
    detail: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for backend in backends:
        began = time.perf_counter()
        try:
            res = measure(backend)
        except Exception as exc:
            detail[backend] = {"error": repr(exc)}
            name = label(backend) if label is not None else f"{bench} {backend}"
            rows.append(row(name, "(failed to run)", None, None, float("nan"), "-", False, repr(exc)))
            continue
        res["wall_s"] = round(time.perf_counter() - began, 1)
        detail[backend] = res
        rows += rows_for(backend, res)
    out = {"name": bench, "detail": detail, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / out_file).write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(run: Callable[..., dict[str, Any]], backends: Sequence[str], out_file: str) -> None:
    """A benchmark module run as a script: ``[backend …] [--quick]``; exit 1 on a missed target."""
    out = run(
        quick="--quick" in sys.argv,
        backends=[a for a in sys.argv[1:] if not a.startswith("--")] or list(backends),
    )
    print(json.dumps(out["rows"], indent=2))
    print(f"wrote {RESULTS / out_file}")
    sys.exit(0 if all(r["met"] is not False for r in out["rows"]) else 1)
