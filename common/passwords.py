"""Password hashing (bcrypt), one place for the CLI and the token function."""

from __future__ import annotations

import bcrypt

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit: longer passwords are refused, never truncated


class PasswordPolicyError(ValueError):
    pass


def check_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordPolicyError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


def hash_password(password: str, rounds: int) -> str:
    check_policy(password)
    return bcrypt_hash(password, rounds)


def bcrypt_hash(password: str, rounds: int) -> str:
    """A hash at ``rounds`` without the policy check: ``hash_password`` for a new password,
    and a login's rehash (its password was accepted when it was set; refusing it now would
    refuse the login)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def bcrypt_cost(password_hash: str) -> int | None:
    """The cost a bcrypt hash was made at (``$2b$12$...`` is 12); None for any other text."""
    parts = password_hash.split("$")
    if len(parts) != 4 or parts[0] or not parts[2].isdigit():
        return None
    return int(parts[2])


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode())
    except ValueError:
        return False


def check_password(password: str, password_hash: str, rounds: int) -> bool:
    """``verify_password`` for a login, which answers a wrong password no faster than a
    check at ``rounds`` would. A name that matches no account is checked against a dummy
    hash at ``rounds``; a real account's hash made at a lower cost (before the cost was
    raised, or by a command run with another) would otherwise answer sooner, telling
    which names exist. The difference is made up by hashing again at the stored cost,
    2^(rounds - cost) - 1 times (Django's ``harden_runtime``)."""
    if verify_password(password, password_hash):
        return True
    cost = bcrypt_cost(password_hash)
    encoded = password.encode()
    if cost is None or cost >= rounds or len(encoded) > MAX_PASSWORD_BYTES:
        return False  # a longer password is refused unchecked, as against the dummy
    salt = password_hash[:29].encode()  # "$2b$NN$" and the 22-character salt
    try:
        for _ in range(2 ** (rounds - cost) - 1):
            bcrypt.hashpw(encoded, salt)
    except ValueError:  # a malformed stored hash, refused at once by verify_password too
        pass
    return False


def needs_rehash(password_hash: str, rounds: int) -> bool:
    """Whether a hash that a login just matched is at another cost than ``rounds``: it
    is then hashed again at ``rounds`` (``bcrypt_hash``), so that raising the cost reaches the
    accounts already there, and lowering it ends their slower answers."""
    cost = bcrypt_cost(password_hash)
    return cost is not None and cost != rounds
