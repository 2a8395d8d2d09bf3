"""Start the official Cloud Firestore emulator (the jar shipped with the gcloud SDK image).

Usage outside pytest::

    python scripts/emulators/firestore_emulator.py [--port PORT]

prints ``127.0.0.1:PORT`` once the emulator is ready and runs until killed (SIGINT/SIGTERM
stop the java process it started). ``tests/emulators/firestore.py`` imports :func:`start`.

Java is started directly, not through the bundled ``cloud_firestore_emulator`` wrapper, because
the wrapper does not ``exec``: killing it would leave java running. The jar cannot be installed
from any registry reachable in CI, so a missing jar is a loud, explicit failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

JAR_ENV = "NORTHSTAR_FIRESTORE_EMULATOR_JAR"
DEFAULT_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
READY_LINE = "Dev App Server is now running"


class EmulatorMissing(RuntimeError):
    """The emulator jar or java is not installed; nothing can be started."""


def find_jar() -> Path:
    """The emulator jar (``$NORTHSTAR_FIRESTORE_EMULATOR_JAR`` or the gcloud SDK path)."""
    jar = Path(os.environ.get(JAR_ENV, DEFAULT_JAR))
    if not jar.is_file():
        raise EmulatorMissing(
            f"Cloud Firestore emulator jar not found at {jar}. It ships with the gcloud SDK "
            "component 'cloud-firestore-emulator' (apt package google-cloud-cli-firestore-emulator);"
            f" install it or point {JAR_ENV} at the jar. It cannot be fetched from PyPI/npm."
        )
    if shutil.which("java") is None:
        raise EmulatorMissing("java is not on PATH; the Firestore emulator needs a JRE (11+).")
    return jar


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM java if the process that started it dies (even by
    SIGKILL), so a crashed test run never leaves an emulator behind. Best effort elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Emulator:
    """A running emulator process (stop it with :meth:`stop`)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate java by its PID (and wait); safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        try:
            self.log_path.unlink()
        except OSError:
            pass


def start(port: int = 0, timeout: float = 90.0) -> Emulator:
    """Start java on 127.0.0.1:``port`` (a free one if 0) and wait until it is ready."""
    jar = find_jar()
    port = port or free_port()
    fd, log_name = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
    log = os.fdopen(fd, "wb")
    cmd = [
        "java",
        "-Xmx512m",
        "-cp",
        str(jar),
        MAIN_CLASS,
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    # PDEATHSIG follows the starting *thread*: only use it from the main thread.
    on_main = threading.current_thread() is threading.main_thread()
    process = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if on_main else None,
    )
    emulator = Emulator(process, port, Path(log_name), log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if READY_LINE in emulator.log_path.read_text(errors="replace"):
                return emulator
            if process.poll() is not None:
                raise RuntimeError(
                    f"Firestore emulator exited with {process.returncode} before it was ready:\n"
                    + emulator.log_tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Firestore emulator not ready after {timeout:.0f}s:\n" + emulator.log_tail()
                )
            time.sleep(0.1)
    except BaseException:
        emulator.stop()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    args = parser.parse_args()
    try:
        emulator = start(args.port)
    except EmulatorMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: object) -> None:
        emulator.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(emulator.host, flush=True)
    try:
        while emulator.process.poll() is None:
            time.sleep(0.5)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
