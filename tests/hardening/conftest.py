"""Hardening tests reuse the function tests' fixtures (real functions-framework processes)."""

from tests.functions.conftest import flask_app, marts_dsn, own_pg_server, serve

__all__ = ["flask_app", "marts_dsn", "own_pg_server", "serve"]
