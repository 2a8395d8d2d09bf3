"""The wheel is what an embedding agent installs: typed (PEP 561), without the repository's
``contracts`` package, and checkable by ``mypy --strict`` from outside the source tree.

The wheel is built from a copy of the sources (so the build never writes into the checkout),
installed into a fresh virtual environment whose only other packages are this venv's
dependencies (msgspec, httpx…) — never the editable install — and a small consumer module is
type-checked against it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("northstar_core", "northstar_adapters", "northstar_http")

CONSUMER = '''\
from __future__ import annotations

from pathlib import Path

from northstar_adapters.compose import open_engines
from northstar_core import Engines, NorthstarError, Page, RequestContext
from northstar_core.chat import ChatEntry, PostedMessage
from northstar_http.client import NorthstarClient


async def embedded(data_dir: Path) -> list[str]:
    engines: Engines = await open_engines(data_dir=data_dir)
    ctx = RequestContext.member("t_acme", "u_bob", mode="lab", run_id="r1")
    try:
        posted: PostedMessage = await engines.chat.post(
            ctx, "th_1", role="user", content="hello", idempotency_key="k1"
        )
        page: Page[ChatEntry] = await engines.chat.list_messages(ctx, "th_1", cursor=None)
        return [posted.cursor, *(entry.cursor for entry in page.items)]
    except NorthstarError as exc:
        return [exc.code, str(exc)]
    finally:
        await engines.close()


async def remote(url: str, token: str) -> Page[ChatEntry]:
    async with NorthstarClient(url, token) as ns:
        return await ns.chat.list_messages("th_1")
'''

# If the installed packages were untyped, everything would be Any and this would pass.
WRONG = '''\
from northstar_core import RequestContext

ctx = RequestContext.viewer("t_acme", "u_bob", mode="lab")
wrong: int = ctx.tenant_id
'''


def _can_build_offline() -> bool:
    """Whether this venv's setuptools builds wheels by itself (no isolated build env)."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist")]
    if _can_build_offline():
        command.append("--no-build-isolation")
    command.append(str(src))
    subprocess.run(command, check=True, timeout=300)
    (built,) = (work / "dist").glob("northstar-*.whl")
    return built


@pytest.fixture(scope="module")
def consumer_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed; this venv's site-packages supplies the
    dependencies through a path file (so the editable install's finder is not loaded)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--quiet", str(wheel)],
        check=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    (site / "northstar_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield env


def _mypy(env: Path, module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(module.parent / ".mypy_cache"),
         "--python-executable", str(env / "bin" / "python"), module.name],
        cwd=module.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_wheel_ships_py_typed_and_no_contracts_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"{package}/py.typed" in names, package
    top = {name.split("/", 1)[0] for name in names}
    assert top == {*PACKAGES, f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}


def test_mypy_strict_accepts_a_consumer_of_the_installed_wheel(
    consumer_env: Path, tmp_path: Path
) -> None:
    site = next((consumer_env / "lib").glob("python*/site-packages"))
    assert (site / "northstar_core" / "py.typed").is_file()
    assert not (site / "contracts").exists()
    consumer = tmp_path / "consumer.py"
    consumer.write_text(CONSUMER)
    result = _mypy(consumer_env, consumer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import-untyped" not in result.stdout

    wrong = tmp_path / "wrong.py"
    wrong.write_text(WRONG)
    result = _mypy(consumer_env, wrong)
    assert result.returncode == 1 and 'expression has type "str"' in result.stdout, result.stdout
    assert "site-packages" not in result.stdout

    # the check reads the installed wheel: without its marker the package is untyped
    (site / "northstar_core" / "py.typed").unlink()
    try:
        result = _mypy(consumer_env, wrong)
        assert "import-untyped" in result.stdout, result.stdout
    finally:
        (site / "northstar_core" / "py.typed").touch()
