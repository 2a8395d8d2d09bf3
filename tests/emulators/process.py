"""What the emulator launchers share: read a launcher's first line, wait until it answers,
stop it by PID (these are the test run's own child processes)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints on stdout, or ``""`` if none came within ``timeout``."""
    line: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[str], timeout: float, what: str, interval: float
) -> None:
    """Poll ``ready`` until it is true; raise if the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout}s")
        time.sleep(interval)


def terminate(process: subprocess.Popen[str]) -> None:
    """Stop this very PID (SIGTERM, then SIGKILL after 10 s) and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
