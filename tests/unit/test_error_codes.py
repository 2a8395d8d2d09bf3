"""The published error catalogue (contracts/error_codes.json) lists every code the code raises.

Codes are found in the source by reading its syntax tree: string literals given to
``NorthstarError`` (and subclasses/helpers whose name ends in ``Error``/``error``) or as
``code=``; the core's constructors (``cursor_invalid(domain, …)`` → ``<domain>.cursor_invalid``…)
with their domain resolved from module constants; f-strings whose placeholders are module
constants. An f-string with a run-time placeholder (``f"{self.domain}.contention"``) must at
least have its suffix catalogued for some domain.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
CATALOGUE: Final = ROOT / "contracts" / "error_codes.json"
PACKAGES: Final = ("northstar_core", "northstar_adapters", "northstar_http")
CODE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
CONSTRUCTOR_SUFFIX: Final = {
    "cursor_invalid": "cursor_invalid",
    "idempotency_mismatch": "idempotency_mismatch",
    "version_conflict": "version_conflict",
    "not_found": "not_found",
    "invalid": "invalid_request",
}


def _catalogue() -> list[dict[str, object]]:
    data = json.loads(CATALOGUE.read_text())
    assert isinstance(data, list)
    return data


def _constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = value.value
    return out


def _resolve(node: ast.expr, consts: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue):
                inner = _resolve(v.value, consts)
                if inner is None:
                    return None
                parts.append(inner)
        return "".join(parts)
    return None


def _func_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _scan() -> tuple[set[str], set[str], list[str]]:
    """(codes, suffixes of run-time templated codes, where each came from)."""
    codes: set[str] = set()
    suffixes: set[str] = set()
    seen: list[str] = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            consts = _constants(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = _func_name(node)
                candidates: list[ast.expr] = []
                if name.endswith(("Error", "error")) and node.args:
                    candidates.append(node.args[0])
                candidates += [kw.value for kw in node.keywords if kw.arg == "code"]
                for cand in candidates:
                    text = _resolve(cand, consts)
                    if text is not None and CODE.match(text):
                        codes.add(text)
                        seen.append(f"{path.relative_to(ROOT)}: {text}")
                    elif text is None and isinstance(cand, ast.JoinedStr):
                        last = cand.values[-1]
                        if isinstance(last, ast.Constant) and str(last.value).startswith("."):
                            suffixes.add(str(last.value)[1:])
                if name in CONSTRUCTOR_SUFFIX and node.args:
                    domain = _resolve(node.args[0], consts)
                    if domain is not None:
                        codes.add(f"{domain}.{CONSTRUCTOR_SUFFIX[name]}")
                if name == "gate_blocked" and len(node.args) >= 2:
                    gate, reason = _resolve(node.args[0], consts), _resolve(node.args[1], consts)
                    if gate is not None and reason is not None:
                        codes.add(f"gate.{gate}.{reason}")
    return codes, suffixes, seen


def test_catalogue_entries_are_well_formed_unique_and_sorted() -> None:
    entries = _catalogue()
    names = [str(e["code"]) for e in entries]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for entry in entries:
        assert set(entry) == {"code", "http_status", "meaning"}, entry
        assert CODE.match(str(entry["code"])), entry
        assert isinstance(entry["http_status"], int) and 400 <= entry["http_status"] <= 599, entry
        assert str(entry["meaning"]).strip(), entry


def test_every_code_raised_in_the_code_base_is_catalogued() -> None:
    catalogued = {str(e["code"]) for e in _catalogue()}
    codes, _, _ = _scan()
    assert codes, "the scanner found no codes at all"
    missing = sorted(codes - catalogued)
    assert not missing, f"add these to contracts/error_codes.json: {missing}"


def test_every_runtime_templated_code_suffix_is_catalogued_for_some_domain() -> None:
    catalogued_suffixes = {str(e["code"]).split(".", 1)[1] for e in _catalogue()}
    _, suffixes, _ = _scan()
    missing = sorted(suffixes - catalogued_suffixes)
    assert not missing, f"no catalogued code ends with: {missing}"


def test_every_resource_kind_has_its_fixed_rule_codes() -> None:
    from northstar_core.routing import RESOURCE_KINDS

    catalogued = {str(e["code"]) for e in _catalogue()}
    for kind in RESOURCE_KINDS:
        assert f"{kind}.missing_route" in catalogued
        assert f"{kind}.backend_unavailable" in catalogued
