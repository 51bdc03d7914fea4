"""Ingestion streams: the loader's peak resident memory (the command and the parser workers it
starts) does not grow with the size of the file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from common.config import Settings
from tests.foundation.test_cli import count, run


def tree_rss_mib(process: psutil.Process) -> float:
    total = 0
    for member in (process, *process.children(recursive=True)):
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def peak_ingest_rss(settings: Settings, tmp_path: Path, rows: int, seed: int) -> tuple[float, str]:
    """Generate ``rows`` rows (ids of their own per ``seed``) and ingest them with the CLI:
    the peak RSS (MiB) seen every 10 ms, and the summary line."""
    path = tmp_path / f"transactions-{rows}.csv"
    generated = run(
        settings, tmp_path, "generate", "--rows", str(rows), "--seed", str(seed), "--out", str(path)
    )
    assert generated.returncode == 0, generated.stderr
    env = {
        **os.environ,
        "SALESMART_DATABASE_URL": settings.database_url,
        "SALESMART_STATE_DIR": str(tmp_path / "state"),
    }
    loader = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", "--target", "postgres", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(loader.pid)
    peak = 0.0
    while loader.poll() is None:
        try:
            peak = max(peak, tree_rss_mib(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    out, err = loader.communicate(timeout=300)
    assert loader.returncode == 0, err
    return peak, out.strip().splitlines()[-1]


def test_peak_memory_does_not_grow_with_the_file(settings: Settings, tmp_path: Path) -> None:
    # Both files are above the size at which parsing moves to worker processes (4 MiB), so
    # the same processes run for both; the second has five times the rows.
    small, small_summary = peak_ingest_rss(settings, tmp_path / "small", 120_000, 1)
    large, large_summary = peak_ingest_rss(settings, tmp_path / "large", 600_000, 2)
    print(f"peak RSS: 120k rows {small:.1f} MiB ({small_summary}); 600k {large:.1f} MiB")
    assert "read 120000" in small_summary and "read 600000" in large_summary
    assert count(settings, "raw.transactions") > 600_000
    # The file is 26 MiB: a loader that held it (or its rows) would grow by far more.
    assert large < small + 24, (small, large)
