"""Processes that must not outlive the one that started them.

A process started by another (an ingest worker, a function served by ``salesmart up``) is
left running when its starter is killed outright (SIGKILL, the OOM killer): nothing in the
starter runs to stop it. On Linux the kernel can do it instead.
"""

from __future__ import annotations

import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when ``parent`` dies; exit at once
    when ``parent`` is already gone (it may die before this call). False where ``prctl``
    is unavailable (not Linux): then nothing is arranged."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    if prctl(_PR_SET_PDEATHSIG, int(signum)) != 0:
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True
