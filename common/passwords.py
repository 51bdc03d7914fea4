"""Password hashing (bcrypt), one place for the CLI and the token function."""

from __future__ import annotations

import re

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


#: What the bcrypt library hashes against (doing the work), as a prefix of the stored text:
#: a variant it knows, a cost of 04-31 in ASCII digits, and 22 characters of salt whose
#: last one holds only the salt's final bits (`.Oeu`); whatever follows only has to
#: differ to refuse. Any other text is refused by the library at once (ValueError).
_BCRYPT_WORK = re.compile(r"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{21}[.Oeu]")


def bcrypt_cost(password_hash: str) -> int | None:
    """The cost a check against ``password_hash`` runs at (``$2b$12$...`` is 12); None for
    text the library refuses without hashing (``$2b$10$disabled``, a hand-set ``!``)."""
    shape = _BCRYPT_WORK.match(password_hash)
    return int(shape[1]) if shape else None


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode())
    except ValueError:
        return False


def pad_refusal(password: str, password_hash: str, rounds: int) -> None:
    """After a login checked against ``password_hash`` is refused (a wrong password, a
    disabled account, a lock), spend what a check at ``rounds`` costs beyond one at the
    hash's own cost. A name that matches no account is checked against a dummy hash at
    ``rounds``; a real account's hash made at a lower cost (before the cost was raised, or
    by a command run with another) would otherwise answer sooner, telling which names
    exist (and, for a disabled account, whether its password was right).

    bcrypt's work doubles with each cost: the missing 2^rounds - 2^cost is one hash at
    each cost from ``cost`` to ``rounds - 1`` (a fresh salt; the password does not matter).
    That is a handful of calls, so their fixed cost stays far below the timing noise (255
    calls at the stored cost overshot by ~4.5%, ~10 ms at cost 12)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return  # refused before any bcrypt, as against the dummy
    cost = bcrypt_cost(password_hash)
    if cost is None:
        # Not a hash bcrypt checks (a `!` that locks an account by hand): refused with no
        # work at all, so all of it is spent here.
        bcrypt.hashpw(b"pad", bcrypt.gensalt(rounds))
        return
    for step in range(cost, rounds):
        bcrypt.hashpw(b"pad", bcrypt.gensalt(step))


def needs_rehash(password_hash: str, rounds: int) -> bool:
    """Whether a hash that a login just matched is at another cost than ``rounds``: it
    is then hashed again at ``rounds`` (``bcrypt_hash``), so that raising the cost reaches the
    accounts already there, and lowering it ends their slower answers."""
    cost = bcrypt_cost(password_hash)
    return cost is not None and cost != rounds
