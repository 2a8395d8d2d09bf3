"""The Firestore test backend: the official Cloud Firestore emulator jar from the gcloud SDK.

* ``firestore_emulator`` — session-scoped pytest fixture: starts java directly through
  ``scripts/emulators/firestore_emulator.py`` on 127.0.0.1 with a free port, waits for
  ``Dev App Server is now running``, sets ``FIRESTORE_EMULATOR_HOST`` (the SDK's standard
  switch) and returns ``"127.0.0.1:PORT"``; it stops java by PID at the end, even on failure.
  A missing jar (or java) fails the tests loudly; it is never skipped.
* :func:`wipe` — deletes every document of one project (the emulator's REST reset endpoint).
  Tests use a fresh project id each (cheaper than a wipe) and wipe it afterwards to keep the
  emulator's memory small.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "scripts" / "emulators" / "firestore_emulator.py"
ENV = "FIRESTORE_EMULATOR_HOST"


def launcher() -> ModuleType:
    """``scripts/emulators/firestore_emulator.py`` as a module (scripts/ is not a package)."""
    name = "northstar_firestore_emulator"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A port nothing listens on right now (for 'unreachable backend' tests)."""
    return int(launcher().free_port())


def wipe(host: str, project: str, database: str = "(default)") -> None:
    """Delete every document of ``project`` in the emulator at ``host``."""
    path = urllib.parse.quote(f"/emulator/v1/projects/{project}/databases/{database}/documents")
    request = urllib.request.Request(f"http://{host}{path}", method="DELETE")
    with urllib.request.urlopen(request, timeout=30):
        pass


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    module = launcher()
    try:
        emulator = module.start()
    except module.EmulatorMissing as exc:
        pytest.fail(f"Firestore emulator unavailable: {exc}", pytrace=False)
    previous = os.environ.get(ENV)
    os.environ[ENV] = emulator.host
    try:
        yield emulator.host
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        emulator.stop()
