"""PII masking: the first 12 hex characters of HMAC-SHA256 keyed by the deployment's PII key.

Keyed, unlike the original design's bare SHA-256, so short ids cannot be reversed by
hashing a dictionary of candidates.
"""

from __future__ import annotations

import hashlib
import hmac

MASK_LENGTH = 12


def mask(value: str, key: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:MASK_LENGTH]


def masker(key: str) -> hmac.HMAC:
    """A keyed HMAC prototype; ``mask_with(proto, value)`` reuses it for bulk masking."""
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


def mask_with(prototype: hmac.HMAC, value: str) -> str:
    h = prototype.copy()
    h.update(value.encode())
    return h.hexdigest()[:MASK_LENGTH]
