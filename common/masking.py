"""PII masking: the first 12 hex characters of HMAC-SHA256 keyed by the deployment's PII key.

Keyed, unlike the original design's bare SHA-256, so short ids cannot be reversed by
hashing a dictionary of candidates.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Callable
from typing import Any

MASK_LENGTH = 12
_BLOCK = 64  # SHA-256 block size


def _small_message_sha256() -> Callable[[bytes], Any]:
    """CPython's built-in SHA-256 when present: the same digests as OpenSSL's, but copying
    and finishing a context costs less, which is what masking a short id mostly is."""
    for module in ("_sha2", "_sha256"):  # Python >= 3.12, then 3.11
        try:
            return importlib.import_module(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


def mask(value: str, key: str) -> str:
    """The contract's mask, written plainly: the first 12 hex characters of HMAC-SHA256
    keyed with the UTF-8 bytes of ``key``. The code uses ``Masker`` (the same answer, twice
    as fast); the tests hold both to this one."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:MASK_LENGTH]


class Masker:
    """``mask`` for many values with one key: the HMAC pads are hashed once (RFC 2104),
    which is about twice as fast per value as ``hmac.new`` when loading millions of rows."""

    def __init__(self, key: str) -> None:
        raw = key.encode()
        if len(raw) > _BLOCK:
            raw = hashlib.sha256(raw).digest()
        raw = raw.ljust(_BLOCK, b"\0")
        sha256 = _small_message_sha256()
        self._inner = sha256(bytes(b ^ 0x36 for b in raw))
        self._outer = sha256(bytes(b ^ 0x5C for b in raw))

    def __call__(self, value: str) -> str:
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return digest[:MASK_LENGTH]
