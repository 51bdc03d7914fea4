"""The local BigQuery stand-in (``bqemulator start ...``), guarded. Run by the stand-in's own
interpreter (``.venv-bqemu``), so it imports nothing of salesmart.

bqemulator runs whatever SQL it is sent on DuckDB, and takes any request on loopback:
DuckDB's ``read_text``/``COPY ... TO`` then reach every file the user running ``up`` may
read or write (its keys under ``.salesmart/``, ``~/.ssh``), for any local user, and a web
page may send it a "simple" cross-site POST. So, before it serves:

- DuckDB's file access is cut to the upload folder its load jobs read
  (``enable_external_access = false`` with ``allowed_directories``; DuckDB refuses to undo
  either while the database is open);
- a request that a browser sent (it carries ``Origin``) or that names another host
  (``Host`` other than loopback: DNS rebinding) is refused with 403. The BigQuery client
  and dbt send neither.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bqemulator import server
from bqemulator.storage import engine

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
_engine_start = engine.DuckDBEngine.start
_create_app = server.create_app


async def _start_without_file_access(self: Any) -> None:
    await _engine_start(self)
    uploads = os.environ["BQEMU_UPLOAD_STAGING_DIR"].replace("'", "''")
    self.connection.execute(f"SET allowed_directories = ['{uploads}']")
    self.connection.execute("SET enable_external_access = false")


def _create_guarded_app(context: Any) -> Any:
    from fastapi import Request
    from fastapi.responses import JSONResponse

    app = _create_app(context)

    @app.middleware("http")
    async def _only_local_clients(request: Request, call_next: Any) -> Any:
        host = request.headers.get("host", "").rpartition(":")[0] or request.headers.get("host")
        if "origin" in request.headers or host not in _LOOPBACK_HOSTS:
            message = "the local BigQuery stand-in answers local clients only (no browsers)"
            return JSONResponse(
                {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}},
                status_code=403,
            )
        return await call_next(request)

    return app


engine.DuckDBEngine.start = _start_without_file_access
server.create_app = _create_guarded_app

if __name__ == "__main__":
    from bqemulator.cli import main

    sys.exit(main())
