"""The DynamoDB test backend: a serialised moto server in a subprocess.

* ``dynamodb_endpoint`` — session-scoped pytest fixture: starts
  ``scripts/emulators/moto_server.py`` on 127.0.0.1 with a free port, waits for
  ``GET /moto-api/``, sets the standard AWS environment (test credentials, region) for the
  SDK's credential chain, yields the endpoint URL and stops the server at the end, even on
  failure.
* ``python -m tests.emulators.moto`` — the same server outside pytest (for a bench or a manual
  run): prints ``MOTO_ENDPOINT=...`` and runs until killed.

It runs in a subprocess (not a thread of the test process) so a benchmark or a kill test can
use it too, and so that moto's global state never shares the interpreter with the code under
test.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.process import first_line, terminate, wait_until

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "scripts" / "emulators" / "moto_server.py"

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
_CLEARED_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")


class MotoServer:
    """One launcher subprocess; ``start()`` returns once the server answers."""

    def __init__(self, process: subprocess.Popen[str], endpoint: str) -> None:
        self.process = process
        self.endpoint = endpoint

    @classmethod
    def start(cls, timeout: float = 30.0, port: int = 0) -> MotoServer:
        """A serialised moto server on 127.0.0.1 (``port`` 0: a free one)."""
        process = subprocess.Popen(
            [
                *(sys.executable, str(LAUNCHER), "--host", "127.0.0.1"),
                *("--port", str(port), "--exit-on-stdin-close"),
            ],
            # The server stops when this pipe closes, so it never outlives a killed test run.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            endpoint = _read_endpoint(process, timeout)
            _wait_ready(endpoint, process, timeout)
        except BaseException:
            terminate(process)
            raise
        return cls(process, endpoint)

    def reset(self) -> None:
        """Wipe every table (``POST /moto-api/reset``)."""
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        terminate(self.process)


def _read_endpoint(process: subprocess.Popen[str], timeout: float) -> str:
    line = first_line(process, timeout)
    if not line.startswith("MOTO_ENDPOINT="):
        raise RuntimeError(
            f"moto launcher did not report its endpoint (exit code {process.poll()}, got {line!r})"
        )
    return line.strip().split("=", 1)[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(endpoint: str, process: subprocess.Popen[str], timeout: float) -> None:
    wait_until(lambda: _answers(endpoint), process, timeout, f"moto server at {endpoint}", 0.1)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TEST_ENV.items():
            mp.setenv(name, value)
        for name in _CLEARED_ENV:
            mp.delenv(name, raising=False)
        server = MotoServer.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def dynamodb_endpoint(moto_server: MotoServer) -> str:
    """The endpoint URL of a serialised moto server, up for the whole session."""
    return moto_server.endpoint


if __name__ == "__main__":
    os.environ.update(TEST_ENV)
    runpy.run_path(str(LAUNCHER), run_name="__main__")
