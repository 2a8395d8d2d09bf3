"""The operator's ``[retention]`` table: read from TOML or ``NORTHSTAR_RETENTION_SPINE_DAYS``,
checked strictly at load (a ConfigError naming the field), and applied by the engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from northstar_adapters.compose import open_engines
from northstar_adapters.config import ConfigError, env_names, load_settings
from northstar_core.clock import ManualClock, parse_iso
from northstar_core.identity import RequestContext
from northstar_core.kernel.buckets import bucket_of, shard_of

DAY = 86_400.0


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "northstar.toml"
    path.write_text(text)
    return path


def test_the_table_is_read_from_toml(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[retention]\nspine_days = { "analytics" = 90, "note.*" = 30, "*" = 3650 }\n',
    )
    settings = load_settings(config, environ={})
    assert settings.retention.spine_days == {"analytics": 90, "note.*": 30, "*": 3650}


def test_absent_keeps_every_event_forever(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, ""), environ={}).retention.spine_days == {}


def test_the_environment_gives_it_as_json_merged_over_the_file(tmp_path: Path) -> None:
    # like NORTHSTAR_CONNECTIONS: a key in both takes the environment's value
    config = write_config(tmp_path, '[retention]\nspine_days = { "*" = 10, "analytics" = 1 }\n')
    environ = {"NORTHSTAR_RETENTION_SPINE_DAYS": json.dumps({"analytics": 7})}
    assert load_settings(config, environ=environ).retention.spine_days == {"*": 10, "analytics": 7}
    assert "NORTHSTAR_RETENTION_SPINE_DAYS" in env_names()
    with pytest.raises(ConfigError, match="NORTHSTAR_RETENTION_SPINE_DAYS must be JSON"):
        load_settings(config, environ={"NORTHSTAR_RETENTION_SPINE_DAYS": "analytics=7"})


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"spine_days": {"analytics": 0}}, ["retention.spine_days", "'analytics'", "from 1 to 36500"]),
        ({"spine_days": {"analytics": 36_501}}, ["retention.spine_days", "'analytics'", "from 1 to 36500"]),
        # no coercion: a quoted, fractional or boolean number of days is a mistake
        ({"spine_days": {"analytics": "90"}}, ["retention.spine_days", "Expected `int`, got `str`"]),
        ({"spine_days": {"analytics": 90.0}}, ["retention.spine_days", "Expected `int`, got `float`"]),
        ({"spine_days": {"analytics": True}}, ["retention.spine_days", "Expected `int`, got `bool`"]),
        ({"spine_days": {"Analytics": 1}}, ["retention.spine_days", "'Analytics'"]),
        ({"spine_days": {"note*": 1}}, ["retention.spine_days", "'note*'"]),
        ({"spine_days": {".*": 1}}, ["retention.spine_days", "'.*'"]),
        ({"spine_days": {"*.note": 1}}, ["retention.spine_days", "'*.note'"]),
        ({"spine_days": ["analytics"]}, ["retention.spine_days", "Expected `object`"]),
        ({"spine": {"analytics": 1}}, ["retention", "unknown field `spine`"]),
        ("90 days", ["retention", "Expected `object`"]),
    ],
)
def test_invalid_tables_are_refused_naming_the_field(tmp_path: Path, table: Any, names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, ""), environ={}, overrides={"retention": table})
    for name in names:
        assert name in str(info.value)


def test_a_quoted_number_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    environ = {"NORTHSTAR_RETENTION_SPINE_DAYS": '{"analytics": "90"}'}
    with pytest.raises(ConfigError, match=r"Expected `int`, got `str` - at `\$\.retention\.spine_days"):
        load_settings(write_config(tmp_path, ""), environ=environ)


async def test_the_engines_write_events_with_the_configured_retention(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[retention]\nspine_days = { "note.*" = 30, "*" = 3650 }\n')
    clock = ManualClock()
    engines = await open_engines(config, data_dir=tmp_path / "data", environ={}, clock=clock)
    try:
        ctx = RequestContext(
            tenant_id="t_a", mode="lab", user_id="u1", roles=("member",), run_id="run1", step_id="s1"
        )
        note = await engines.spine.append(ctx, {"event_type": "note.saved", "source": "agent"})
        other = await engines.spine.append(ctx, {"event_type": "rl", "source": "agent"})
        store = await engines.registry.store_for("event_spine", "t_a")
        partition = f"t_a|lab|spine|{bucket_of(note.event_id)}|{shard_of('run1', 8):02d}"
        stored = {item.key: item.expires_at for item in await store.query(partition, "ev#")}
        assert stored == {
            f"ev#{note.event_id}": parse_iso(note.timestamp) + 30 * DAY,
            f"ev#{other.event_id}": parse_iso(other.timestamp) + 3650 * DAY,
        }
    finally:
        await engines.close()
