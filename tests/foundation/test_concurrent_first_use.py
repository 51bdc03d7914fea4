"""Things several commands may do for the first time at the same moment: generate the local
keys, migrate a fresh database. Each must end as if one had done it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common.config import build_settings
from common.local_run import local_secret
from common.pg import connect
from pipeline.migrate import migrate_database
from pipeline.postgres_embedded import EmbeddedPostgres
from tests.conftest import create_database

T = TypeVar("T")


def together(count: int, work: Callable[[], T]) -> list[T | BaseException]:
    """``work`` run by ``count`` threads released at the same moment; each one's outcome."""
    barrier = threading.Barrier(count)
    outcomes: list[T | BaseException] = [RuntimeError("did not finish")] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = work()
        except BaseException as exc:  # reported by the test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_commands_generating_the_local_keys_together_agree(tmp_path: Path) -> None:
    """Two first commands in a fresh folder each made and used a PII key of their own (the
    same ids masked two ways), or read the file half-written."""
    for trial in range(15):
        state = tmp_path / f"state{trial}"
        settings = build_settings({**os.environ, "SALESMART_STATE_DIR": str(state)})
        keys = together(6, lambda: local_secret(settings, "pii-key"))  # noqa: B023
        assert len(set(map(str, keys))) == 1, keys
        assert keys[0] == (state / "pii-key").read_text().strip()
        assert len(str(keys[0])) >= 32
        assert [p.name for p in state.iterdir()] == ["pii-key"]  # nothing left aside
        assert (state / "pii-key").stat().st_mode & 0o777 == 0o600


def test_migrators_on_a_fresh_database_take_turns(pg_server: EmbeddedPostgres) -> None:
    """Several migrators (function instances, the migration Job, a command) on a database
    never migrated: their CREATE ... IF NOT EXISTS raced (a unique violation)."""
    for _ in range(5):
        dsn = create_database(pg_server, migrated=False)
        outcomes = together(4, lambda: migrate_database(dsn))  # noqa: B023
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        applied = sorted(v for o in outcomes if isinstance(o, list) for v in o)
        conn = connect(dsn)
        try:
            recorded = [
                row[0]
                for row in conn.run(
                    "SELECT version FROM salesmart_meta.schema_migrations ORDER BY 1"
                )
            ]
        finally:
            conn.close()
        assert applied == recorded  # each migration applied once, by one of them
