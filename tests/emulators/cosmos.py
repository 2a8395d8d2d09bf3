"""The Cosmos DB test backend: ``@vercel/cosmosdb-server`` behind ``scripts/cosmos/launcher.js``.

* ``cosmos_endpoint`` — session-scoped pytest fixture: installs the pinned npm package with
  ``npm ci`` if ``scripts/cosmos/node_modules`` is missing (fails loudly without node/npm),
  starts the launcher on 127.0.0.1 with a free port, waits until it answers, sets
  ``COSMOS_KEY`` for the SDK (the emulator checks no key; the adapter only ever reads keys from
  the environment), yields ``https://127.0.0.1:<port>/`` and stops the process by PID at the
  end, even on failure. The launcher also exits when its stdin pipe closes, so a killed test
  run never leaves it behind.
* ``python -m tests.emulators.cosmos`` — the same server outside pytest (bench, manual runs):
  prints ``COSMOS_ENDPOINT=...`` and runs until interrupted.

The emulator is memory-only: data lives as long as the process. Tests isolate themselves with
a fresh database per test and delete it afterwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.process import first_line, terminate, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_DIR = ROOT / "scripts" / "cosmos"
LAUNCHER = SCRIPT_DIR / "launcher.js"
PACKAGE_DIR = SCRIPT_DIR / "node_modules" / "@vercel" / "cosmosdb-server"

# Not a secret: the emulator accepts any key, but the SDK needs a base64 string to sign with.
EMULATOR_KEY = base64.b64encode(b"northstar-cosmos-emulator-accepts-any-key").decode()
KEY_ENV = "COSMOS_KEY"


def ensure_installed() -> None:
    """``npm ci`` in scripts/cosmos when the package is missing; loud failure without npm."""
    if PACKAGE_DIR.is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError(
            "the Cosmos DB test backend needs node and npm on PATH "
            "(it runs @vercel/cosmosdb-server from scripts/cosmos)"
        )
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=SCRIPT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not PACKAGE_DIR.is_dir():
        raise RuntimeError(f"npm ci in {SCRIPT_DIR} failed:\n{result.stdout}\n{result.stderr}")


class CosmosServer:
    """One launcher process; ``start()`` returns once it accepts TLS connections."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"https://127.0.0.1:{port}/"

    @classmethod
    def start(cls, timeout: float = 30.0, port: int = 0) -> CosmosServer:
        """The patched emulator on 127.0.0.1 (``port`` 0: a free one)."""
        ensure_installed()
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH; the Cosmos DB test backend cannot start")
        process = subprocess.Popen(
            [node, str(LAUNCHER), "--host", "127.0.0.1", "--port", str(port), "--exit-on-stdin-close"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=SCRIPT_DIR,
        )
        try:
            port = _read_port(process, timeout)
            _wait_ready(port, process, timeout)
        except BaseException:
            terminate(process)  # this very PID: the launcher is node itself, no wrapper shell
            raise
        return cls(process, port)

    def stop(self) -> None:
        terminate(self.process)


def _read_port(process: subprocess.Popen[str], timeout: float) -> int:
    line = first_line(process, timeout)
    prefix = "cosmosdb-server listening on "
    if not line.startswith(prefix):
        raise RuntimeError(
            f"cosmos launcher did not report its port (exit code {process.poll()}, got {line!r})"
        )
    return int(line[len(prefix) :].strip())


def _answers_tls(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return True
    except OSError:
        return False


def _wait_ready(port: int, process: subprocess.Popen[str], timeout: float) -> None:
    wait_until(lambda: _answers_tls(port), process, timeout, f"cosmos launcher on port {port}", 0.05)


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, EMULATOR_KEY)
        server = CosmosServer.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def cosmos_endpoint(cosmos_server: CosmosServer) -> str:
    """The account endpoint of the patched Cosmos emulator, up for the whole session."""
    return cosmos_server.endpoint


if __name__ == "__main__":
    os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
    server = CosmosServer.start()
    print(f"COSMOS_ENDPOINT={server.endpoint}", flush=True)
    print(f"{KEY_ENV}={EMULATOR_KEY}", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        sys.exit(0)
