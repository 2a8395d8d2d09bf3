"""The benchmark harness: one entry point for P1-P11, one table, one JSON file.

    .venv/bin/python -m bench.run [--only P1,P3] [--quick] [--p3-backends sqlite,dynamodb]
    ./scripts/bench ...            # venv setup, then the same

Every figure is a ratio against a baseline measured in the same run, with the variants
interleaved (the machine is shared and noisy); medians are reported. Timings live here only,
never in the test suite. Writes ``bench/results/latest.json`` (and ``latest.md``, the table as
Markdown for the README).

* P1 HTTP shell cost — ``bench/p1_http.py``
* P2 SQLite vs the ``eventsourcing`` recorder and the fsync limit — ``bench/p2_sqlite.py``
* P3 scale (request counts and times at 100 vs 100k history) — ``bench/p3_scale.py``
* P4 cloud adapter vs raw SDK on each emulator — ``bench/p4_<backend>.py``
* P5 SSE fan-out and memory per idle subscriber — ``bench/p5_sse.py``
* P6 store round trips per operation on every backend, and a canvas command's latency vs one
  raw-SDK atomic write on each emulator — ``bench/p6_round_trips.py``
* P7 capacity model: one tenant's sustainable ops/s per operation on DynamoDB, Cosmos DB and
  Firestore from the engines' traced store calls and the providers' published limits, and the
  live tail's idle reads — ``bench/p7_capacity.py``
* P8 live tails: idle backend reads per followed stream per process and cross-process delivery
  on sqlite and each emulator — ``bench/p8_tails.py``
* P9 budget ledger: usage entries/s one tenant sustains under concurrent recorders, one
  stream vs the sharded ledger, on sqlite and each emulator — ``bench/p9_budget.py``
* P10 tenant archives: export and import items/s next to raw reads and writes of the same
  items, on sqlite and each emulator — ``bench/p10_archive.py``
* P11 online migration: copy items/s per backend pair next to raw writes into the target, and
  a client write's latency while journaled next to before — ``bench/p11_migration.py``

Exit status: 1 while any target is missed. The end of the output lists the missed rows per
bench, so one bench's known misses (see the README's notes on the latest run) never hide
another's regression.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import PY, RESULTS, row  # noqa: E402

ALL = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11")
P4_BACKENDS = ("dynamodb", "firestore", "cosmos")
P4_TARGET = 1.15


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit,
        "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _script(name: str, args: list[str], out: Path, timeout: float) -> dict[str, Any]:
    script = ROOT / "bench" / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"bench/{name}.py is not there")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [PY, str(script), *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"bench/{name}.py exited {proc.returncode}: " + " | ".join(tail))
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def p1(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p1_http

    return p1_http.run(quick=args.quick)


def p2(args: argparse.Namespace) -> dict[str, Any]:
    data = _script("p2_sqlite", ["--quick"] if args.quick else [], RESULTS / "p2_sqlite.json", 1800)
    return {"name": "P2", "detail": data, "rows": data.get("rows", [])}


def p3(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p3_scale

    return p3_scale.run(quick=args.quick, backends=args.p3_backends.split(","))


def p4(args: argparse.Namespace) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    rows = []
    appends = "40" if args.quick else "200"
    for backend in args.p4_backends.split(","):
        try:
            data = _script(f"p4_{backend}", ["--appends", appends], RESULTS / f"p4_{backend}.json", 1800)
        except Exception as exc:  # one emulator failing must not hide the others
            rows.append(
                row(
                    "P4",
                    f"{backend}: adapter append / raw SDK",
                    None,
                    None,
                    float("nan"),
                    f"<= {P4_TARGET}",
                    False,
                    f"not measured: {exc}",
                )
            )
            continue
        detail[backend] = data
        value = data["ratio_adapter_vs_raw_full"]
        res = data["results"]
        note = (
            f"p50 {res['adapter']['p50_ms']} vs {res['raw_full']['p50_ms']} ms, {data['appends']} appends "
            f"interleaved; adapter / raw batch only (no reads) = {data['ratio_adapter_vs_raw_batch']}"
        )
        rows.append(
            row(
                "P4",
                f"{backend}: adapter append / raw SDK (same round trips), p50",
                res["adapter"]["p50_ms"],
                res["raw_full"]["p50_ms"],
                value,
                f"<= {P4_TARGET}",
                value <= P4_TARGET,
                note,
            )
        )
    return {"name": "P4", "detail": detail, "rows": rows}


def p5(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p5_sse

    if args.quick:
        return p5_sse.run(quick=True, subscribers=300, events=30)
    return p5_sse.run()


def p6(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p6_round_trips

    return p6_round_trips.run(quick=args.quick, backends=args.p6_backends.split(","))


def p7(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p7_capacity

    return p7_capacity.run(quick=args.quick, backends=args.p7_backends.split(","))


def p8(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p8_tails

    return p8_tails.run(quick=args.quick, backends=args.p8_backends.split(","))


def p9(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p9_budget

    return p9_budget.run(quick=args.quick, backends=args.p9_backends.split(","))


def p10(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p10_archive

    return p10_archive.run(quick=args.quick, backends=args.p10_backends.split(","))


def p11(args: argparse.Namespace) -> dict[str, Any]:
    from bench import p11_migration

    return p11_migration.run(quick=args.quick, backends=args.p11_pairs.split(","))


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "P1": p1,
    "P2": p2,
    "P3": p3,
    "P4": p4,
    "P5": p5,
    "P6": p6,
    "P7": p7,
    "P8": p8,
    "P9": p9,
    "P10": p10,
    "P11": p11,
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["bench", "metric", "ours", "baseline", "ratio", "target", "met"]
    body = [
        [
            r["bench"],
            r["metric"],
            _fmt(r["ours"]),
            _fmt(r["baseline"]),
            _fmt(r["ratio"]),
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    widths[1] = min(widths[1], 70)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c)[:w].ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset of " + ",".join(ALL))
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (smaller histories, fewer rounds)"
    )
    parser.add_argument(
        "--p3-backends", default="sqlite,dynamodb,firestore,cosmos", help="P3 backends (comma-separated)"
    )
    parser.add_argument("--p4-backends", default=",".join(P4_BACKENDS))
    parser.add_argument(
        "--p6-backends",
        default="memory,sqlite,dynamodb,firestore,cosmos",
        help="P6 backends (comma-separated)",
    )
    parser.add_argument(
        "--p7-backends",
        default="dynamodb,cosmos,firestore",
        help="backends whose published limits P7 models (comma-separated)",
    )
    parser.add_argument(
        "--p8-backends",
        default="sqlite,dynamodb,firestore,cosmos",
        help="backends P8 measures live tails on (comma-separated)",
    )
    parser.add_argument(
        "--p9-backends",
        default="sqlite,dynamodb,firestore,cosmos",
        help="backends P9 measures the budget ledger on (comma-separated)",
    )
    parser.add_argument(
        "--p10-backends",
        default="sqlite,dynamodb,firestore,cosmos",
        help="backends P10 measures archive export and import on (comma-separated)",
    )
    parser.add_argument(
        "--p11-pairs",
        default="sqlite:dynamodb,sqlite:firestore,sqlite:cosmos,dynamodb:cosmos",
        help="source:target backend pairs P11 migrates between (comma-separated)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    chosen = [b.strip().upper() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benches": {}, "rows": []}
    for name in chosen:
        print(f"==> {name}", flush=True)
        began = time.perf_counter()
        try:
            result = BENCHES[name](args)
        except Exception as exc:
            traceback.print_exc()
            result = {
                "name": name,
                "detail": {"error": repr(exc)},
                "rows": [row(name, "(failed to run)", None, None, float("nan"), "-", False, repr(exc))],
            }
        result["seconds"] = round(time.perf_counter() - began, 1)
        report["benches"][name] = result
        report["rows"] += result["rows"]
        print(table(result["rows"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    m = report["machine"]
    md = (
        f"Measured {m['at']} on {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, {m['os']}, Python "
        f"{m['python']}, commit {m['commit']}{' (--quick)' if args.quick else ''}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])}.\n\n"
        + table(report["rows"], markdown=True)
        + "\n"
    )
    args.out.with_suffix(".md").write_text(md)
    print()
    print(table(report["rows"]))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    missed = missed_by_bench(report)
    for name, rows in missed.items():
        print(f"targets missed in {name} ({len(rows)}):")
        for r in rows:
            print(f"  {r['bench']}: {r['metric']}")
    return 1 if missed else 0


def missed_by_bench(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows that miss their target, per bench (in the order run)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, result in report["benches"].items():
        rows = [r for r in result["rows"] if r["met"] is False]
        if rows:
            out[name] = rows
    return out


if __name__ == "__main__":
    raise SystemExit(main())
