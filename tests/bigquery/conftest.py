"""BigQuery fixtures: the real ``bqemulator`` per test worker, the real client, fresh datasets.

``bq_emulator`` starts one stand-in per xdist worker (persistent, in a temporary folder).
``bq_settings`` gives each test its own warehouse and mart datasets on it, so tests never
see each other's rows; their clients are dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common import bigquery as bq
from common.config import Settings, build_settings
from pipeline.bq_emulator import EmulatorHandle, start_emulator

PROJECT = "salesmart-test"


def settings_for(endpoint: str, **extra: str) -> Settings:
    """Settings pointing at ``endpoint`` with fresh, unique dataset names."""
    token = secrets.token_hex(4)
    env = {
        **os.environ,
        "SALESMART_ENV": "dev",
        "SALESMART_BQ_ENDPOINT": endpoint,
        "SALESMART_BQ_PROJECT": PROJECT,
        "SALESMART_BQ_WAREHOUSE_DATASET": f"wh_{token}",
        "SALESMART_BQ_MART_DATASET": f"mart_{token}",
        **extra,
    }
    return build_settings(env)


@contextmanager
def running_stand_in() -> Iterator[EmulatorHandle]:
    """A stand-in of its own, in a temporary folder removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="salesmart-bqemu-"))
    handle = start_emulator(root / "bq", PROJECT)
    try:
        yield handle
    finally:
        handle.stop()
        bq.reset_clients()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[EmulatorHandle]:
    with running_stand_in() as handle:
        yield handle


@pytest.fixture
def bq_settings(bq_emulator: EmulatorHandle) -> Iterator[Settings]:
    settings = settings_for(bq_emulator.endpoint)
    yield settings
    bq.reset_clients()
