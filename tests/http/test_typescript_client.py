"""A TypeScript client generated from the published OpenAPI document compiles.

``contracts/typescript/client.ts`` is a small chat client typed only from the document
(``openapi-typescript``): it posts a message, pages through a thread and reads the error
envelope. ``tsc --strict`` over it and the generated types fails when the document stops
describing what a client reads — an untyped response becomes ``unknown``, an undocumented one
``never``, and ``client.ts`` turns both into compile errors naming the operation.

The tools are the exact versions of ``contracts/typescript/package-lock.json``; ``./scripts/test``
installs them (``npm ci --prefix contracts/typescript``). They are run from that
``node_modules/.bin`` rather than through ``npx``, which could fetch another version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from northstar_http.cli import OPENAPI_FILE

TS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "typescript"
BIN = TS_DIR / "node_modules" / ".bin"
MESSAGES = "/chat/threads/{thread_id}/messages"


def _tools() -> tuple[Path, Path]:
    generator, tsc = BIN / "openapi-typescript", BIN / "tsc"
    if shutil.which("node") is None:
        pytest.fail("node is required for the TypeScript client check (it comes with npm)")
    if not generator.exists() or not tsc.exists():
        pytest.fail(
            f"{BIN} lacks openapi-typescript/tsc: run `npm ci --prefix contracts/typescript` "
            "(./scripts/test does this when node_modules is missing or older than the lock)"
        )
    return generator, tsc


def _compile(document: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Generate ``schema.d.ts`` from ``document`` next to a copy of the client and type-check both."""
    generator, tsc = _tools()
    for name in ("client.ts", "tsconfig.json"):
        shutil.copy(TS_DIR / name, workdir / name)
    generated = subprocess.run(
        [str(generator), str(document), "-o", str(workdir / "schema.d.ts")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TS_DIR,
    )
    assert generated.returncode == 0, (
        f"openapi-typescript failed on {document}:\n{generated.stdout}{generated.stderr}"
    )
    return subprocess.run(
        [str(tsc), "-p", str(workdir / "tsconfig.json"), "--noEmit", "--strict", "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=workdir,
    )


def test_the_client_compiles_against_the_published_document(tmp_path: Path) -> None:
    result = _compile(OPENAPI_FILE, tmp_path)
    assert result.returncode == 0, (
        "contracts/typescript/client.ts does not compile against the types generated from "
        f"contracts/openapi.json:\n{result.stdout}{result.stderr}"
    )


def test_an_untyped_response_breaks_the_compilation(tmp_path: Path) -> None:
    # The check must be able to fail: the same document with the message page left untyped
    # (what a handler returning a bare dict publishes) must not compile.
    document = json.loads(OPENAPI_FILE.read_text())
    document["paths"][MESSAGES]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "additionalProperties": {},
    }
    regressed = tmp_path / "regressed.json"
    regressed.write_text(json.dumps(document))
    result = _compile(regressed, tmp_path)
    assert result.returncode != 0, "an untyped GET /chat/threads/{thread_id}/messages still compiled"
    assert "client.ts" in result.stdout, result.stdout
