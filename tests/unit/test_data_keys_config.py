"""``[data_keys]``: where the key-encryption key comes from, checked as the server starts."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from northstar_adapters.compose import data_key_cipher
from northstar_adapters.config import ConfigError, finalize, load_settings
from northstar_adapters.sealing import AesGcmCipher
from northstar_core.kernel.sealing import SealBroken


def _settings(tmp_path: Path, data_keys: dict[str, str]) -> object:
    return finalize(
        load_settings(
            environ={},
            overrides={"mode": "lab", "data_dir": str(tmp_path / "data"), "data_keys": data_keys},
            config_file=None,
        )
    )


def test_no_data_keys_means_no_cipher(tmp_path: Path) -> None:
    assert data_key_cipher(_settings(tmp_path, {}), environ={}) is None  # type: ignore[arg-type]


def test_a_key_from_the_environment(tmp_path: Path) -> None:
    kek = os.urandom(32)
    settings = _settings(tmp_path, {"key_env": "MY_KEK"})
    cipher = data_key_cipher(settings, environ={"MY_KEK": base64.b64encode(kek).decode()})  # type: ignore[arg-type]
    assert isinstance(cipher, AesGcmCipher)
    same = AesGcmCipher(kek)
    assert same.unwrap(cipher.wrap(b"k" * 32, b"ctx"), b"ctx") == b"k" * 32
    with pytest.raises(SealBroken):
        same.unwrap(cipher.wrap(b"k" * 32, b"ctx"), b"another context")
    for environ, problem in (
        ({}, "not set"),
        ({"MY_KEK": "%%%"}, "not base64"),
        ({"MY_KEK": "AAAA"}, "32 bytes"),
    ):
        with pytest.raises(ConfigError, match=problem):
            data_key_cipher(settings, environ=environ)  # type: ignore[arg-type]


def test_a_key_file_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek"
    settings = _settings(tmp_path, {"key_file": str(path)})
    first = data_key_cipher(settings, environ={})  # type: ignore[arg-type]
    assert first is not None and path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    second = data_key_cipher(settings, environ={})  # type: ignore[arg-type]
    assert second is not None and path.read_text() == text
    assert second.unwrap(first.wrap(b"x" * 32, b"c"), b"c") == b"x" * 32


def test_both_or_malformed_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        _settings(tmp_path, {"key_env": "A", "key_file": "/tmp/x"})
    with pytest.raises(ConfigError):
        _settings(tmp_path, {"key_env": "lower-case"})
    with pytest.raises(ConfigError):
        _settings(tmp_path, {"nonsense": "x"})


def test_serve_refuses_to_start_when_the_key_is_not_there(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "northstar.toml"
    config.write_text(
        f'mode = "lab"\ndata_dir = "{tmp_path / "data"}"\n[data_keys]\nkey_env = "NO_SUCH_KEK"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_") and k != "NO_SUCH_KEK"}
    done = subprocess.run(
        [sys.executable, "-m", "northstar_http.cli", "--config", str(config), "serve", "--port", "0"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and b"NO_SUCH_KEK is not set" in done.stderr
