"""Defer the regular expressions a library compiles at import until they are first used.

marshmallow compiles its e-mail validator's patterns when ``marshmallow.validate`` is
imported; with ``IGNORECASE`` over the whole of Unicode that costs ~70 ms, the largest
single piece of a trends function's cold start, for a validator the functions never call.
The same trick as Breezy's ``lazy_regex``, but narrow: only ``re.compile`` calls made by
the named modules' own code, only while they are imported, and the stand-in compiles the
real pattern the first time any of its attributes is used.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from types import ModuleType
from typing import Any

_swap_lock = threading.Lock()
_original_compile = re.compile


class DeferredPattern:
    """Behaves as ``re.compile(pattern, flags)`` once touched (``match``, ``search``, ...)."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: re.Pattern[Any] | None = None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def _real(self) -> re.Pattern[Any]:
        if self._compiled is None:  # a race compiles twice; both results are equal
            self._compiled = _original_compile(self._pattern, self._flags)
        return self._compiled

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # ABCMeta probes class attributes for __isabstractmethod__
            raise AttributeError(name)
        return getattr(self._real(), name)

    def __repr__(self) -> str:
        return f"DeferredPattern({self._pattern!r}, {self._flags})"


def import_deferring_regexes(name: str) -> ModuleType:
    """Import module ``name`` with its module-level ``re.compile`` calls deferred.

    Only calls whose caller's module is ``name`` are deferred; every other caller (other
    modules, other threads) gets a real pattern as usual.
    """
    if name in sys.modules:
        return sys.modules[name]

    def compile_(pattern: Any, flags: int | re.RegexFlag = 0) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__")
        if caller == name and isinstance(pattern, (str, bytes)):
            return DeferredPattern(pattern, int(flags))
        return _original_compile(pattern, flags)

    with _swap_lock:
        re.compile = compile_
        try:
            return importlib.import_module(name)
        finally:
            re.compile = _original_compile
