"""HS256 compact JWS (RFC 7515/7519), the only algorithm the functions sign or accept.

Written out (HMAC-SHA256 over base64url JSON) rather than imported: PyJWT loads the whole
``cryptography`` package for its asymmetric algorithms, a fifth of a cold start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from common.errors import InvalidToken

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4096

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}
_JWT_TYPES = frozenset({"jwt", "application/jwt"})


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_segment(data: dict[str, Any]) -> str:
    return _b64encode(json.dumps(data, separators=(",", ":")).encode())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode_hs256(claims: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_json_segment(_HEADER)}.{_json_segment(claims)}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64encode(signature)}"


def decode_hs256(token: str, key: bytes) -> dict[str, Any]:
    """The claims of an authentic HS256 token; ``InvalidToken`` for anything else.

    The header must say ``alg: HS256`` (so ``none``, other HMACs and asymmetric algorithms
    are refused before any key is used) and carry no ``crit`` extensions; the signature is
    compared in constant time before the payload is even parsed.
    """
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise InvalidToken()
    header_segment, payload_segment, signature_segment = token.split(".")
    try:
        header = json.loads(_b64decode(header_segment), parse_constant=_no_constant)
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM or "crit" in header:
            raise InvalidToken()
        # RFC 7515 4.1.9: a media type, compared case-insensitively, "application/" optional.
        if str(header.get("typ", "JWT")).lower() not in _JWT_TYPES:
            raise InvalidToken()
        expected = hmac.new(
            key, f"{header_segment}.{payload_segment}".encode("ascii"), hashlib.sha256
        ).digest()
        # Compared as text: base64url's unused low bits would let one signature be spelled
        # several ways (one token, several strings).
        if not hmac.compare_digest(_b64encode(expected).encode(), signature_segment.encode()):
            raise InvalidToken()
        claims = json.loads(_b64decode(payload_segment), parse_constant=_no_constant)
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
        raise InvalidToken() from None
    if not isinstance(claims, dict):
        raise InvalidToken()
    return claims
