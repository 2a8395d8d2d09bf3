"""The data keys' cipher: AES-256-GCM (``cryptography``) under the operator's key-encryption key.

The key-encryption key (32 bytes) comes from the operator's configuration only
(``[data_keys]``): ``key_env`` names an environment variable holding it in base64, or
``key_file`` a local file holding it (created, mode 0600, with a random key if it does not
exist — the lab's choice; a production deployment keeps it in its secret manager and passes it
through the environment). Every sealed value is a fresh 96-bit nonce followed by the ciphertext
and its tag; the caller's context is the AEAD's associated data.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from northstar_core.kernel.sealing import SealBroken

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


class AesGcmCipher:
    """:class:`northstar_core.kernel.sealing.Cipher` with AES-256-GCM."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEY_BYTES:
            raise ValueError(f"the key-encryption key must be {KEY_BYTES} bytes")
        self._kek = AESGCM(kek)

    def new_key(self) -> bytes:
        return AESGCM.generate_key(bit_length=KEY_BYTES * 8)

    @staticmethod
    def _seal(aead: AESGCM, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + aead.encrypt(nonce, plaintext, context)

    @staticmethod
    def _open(aead: AESGCM, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + 16:
            raise SealBroken("too short")
        try:
            return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except InvalidTag:
            raise SealBroken("does not open") from None

    def wrap(self, key: bytes, context: bytes) -> bytes:
        return self._seal(self._kek, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._open(self._kek, wrapped, context)

    def seal(self, key: bytes, plaintext: bytes, context: bytes) -> bytes:
        return self._seal(AESGCM(key), plaintext, context)

    def open(self, key: bytes, sealed: bytes, context: bytes) -> bytes:
        return self._open(AESGCM(key), sealed, context)


def kek_from_env(value: str, name: str) -> bytes:
    """The key-encryption key in environment variable ``name`` (base64 of 32 bytes)."""
    try:
        kek = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64") from None
    if len(kek) != KEY_BYTES:
        raise ValueError(f"{name} must hold {KEY_BYTES} bytes in base64")
    return kek


def kek_from_file(path: Path) -> bytes:
    """The key-encryption key in ``path`` (base64 of 32 bytes), created with a random one (mode
    0600) if the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: theirs is the key
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    return kek_from_env(path.read_text().strip(), str(path))
