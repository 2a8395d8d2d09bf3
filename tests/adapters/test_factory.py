"""Every backend package is a ``Backend``: it opens stores, and it provisions or declines."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from northstar_adapters import AdapterFactory, Backend, cosmos, dynamodb, firestore, memory, sqlite
from northstar_core.routing import BACKENDS, Target

# Checked statically (mypy compares each module with the protocol) and at run time below.
PACKAGES: dict[str, Backend] = {
    "memory": memory,
    "sqlite": sqlite,
    "dynamodb": dynamodb,
    "firestore": firestore,
    "cosmos": cosmos,
}


def test_every_backend_is_a_package_of_the_factory() -> None:
    assert set(PACKAGES) == set(BACKENDS)
    factory = AdapterFactory()
    for name, package in PACKAGES.items():
        assert factory.backend(name) is package
    with pytest.raises(ValueError, match="unknown backend 'oracle'"):
        factory.backend("oracle")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_declares_how_it_is_provisioned(name: str) -> None:
    package = PACKAGES[name]
    assert callable(package.open_store)
    provision = package.provision
    if name == "memory":
        assert provision is None  # declined explicitly: nothing outlives the process
        return
    assert provision is not None and inspect.iscoroutinefunction(provision)
    parameters = inspect.signature(provision).parameters
    assert list(parameters) == ["target", "dry_run"]
    assert parameters["dry_run"].kind is inspect.Parameter.KEYWORD_ONLY


async def test_the_factory_provisions_through_the_declared_provisioner(tmp_path: Path) -> None:
    factory = AdapterFactory()
    in_memory = Target(resource_kind="chat_store", backend="memory")
    assert await factory.provision(in_memory, dry_run=False) is None
    target = Target(resource_kind="chat_store", backend="sqlite", params={"path": str(tmp_path / "p.db")})
    plan = await factory.provision(target, dry_run=True)
    assert plan is not None and all(line.startswith("would ensure sqlite") for line in plan)
    assert not (tmp_path / "p.db").exists()
    done = await factory.provision(target, dry_run=False)
    assert done is not None and all(line.startswith("ensured sqlite") for line in done)
    assert (tmp_path / "p.db").is_file()
