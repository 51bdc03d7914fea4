"""Load generators: ``wrk`` against an HTTP instance (a Lua script sets the method, headers and
body and prints the percentiles as JSON) and ``pgbench`` running the trends SQL directly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.functions import Probe
from bench.machine import percentile
from bench.stack import Stack, pg_bin
from common.trends import TrendFilters
from common.trends_pg import summary_json_statement

MARKER = "WRKJSON "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d}}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
end
""".replace("MARKER", MARKER)


class LoadError(RuntimeError):
    pass


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_script(probe: Probe) -> str:
    lines = [f"wrk.method = {_lua_string(probe.method)}"]
    if probe.body:
        lines.append(f"wrk.body = {_lua_string(probe.body)}")
    for name, value in probe.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n" + _DONE


def wrk(url: str, probe: Probe, *, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run; throughput and latency percentiles (milliseconds)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(probe))
    try:
        threads = max(1, min(2, connections))
        completed = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{seconds:g}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                script.name,
                url + probe.path,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in completed.stdout.splitlines() if x.startswith(MARKER)), None)
    if completed.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()[:300]}")
    data = json.loads(line[len(MARKER) :])
    seconds_run = data["duration_us"] / 1e6
    errors = data["errors"]
    latency = data["latency_us"]
    failed = sum(errors.values())
    return {
        "connections": connections,
        "threads": threads,
        "seconds": round(seconds_run, 2),
        "requests": data["requests"],
        "errors": errors,
        "ok_requests": max(0, data["requests"] - errors["status"] - errors["timeout"]),
        "requests_per_second": round((data["requests"] - failed) / seconds_run, 1),
        "latency_ms": {key: round(value / 1000, 2) for key, value in latency.items()},
    }


# -- pgbench: the database floor of trends_pg -----------------------------------------------
def trends_sql(schema: str, filters: TrendFilters) -> tuple[str, dict[str, str]]:
    """trends_pg's own statement for ``filters``, for pgbench: ``:name`` parameters stay
    pgbench variables (given with ``-D``); absent filters become NULL, as the function
    passes them."""
    statement, values = summary_json_statement(schema, filters)
    variables = {}
    for name, value in values.items():
        if value is None:
            statement = re.sub(rf":{name}\b", "NULL", statement)
        else:
            variables[name] = str(value)
    return " ".join(statement.split()) + ";\n", variables


def pgbench(
    stack: Stack,
    database: str,
    sql: str,
    variables: Mapping[str, str],
    *,
    clients: int,
    seconds: float,
) -> dict[str, Any]:
    """pgbench with prepared statements; throughput and latency percentiles from its
    per-transaction log."""
    with tempfile.TemporaryDirectory(prefix="salesmart-pgbench-") as folder:
        script = Path(folder) / "trends.sql"
        script.write_text(sql)
        args = [
            str(pg_bin("pgbench")),
            "-n",
            "-M",
            "prepared",
            "-f",
            str(script),
            "-c",
            str(clients),
            "-j",
            str(max(1, min(2, clients))),
            "-T",
            f"{max(1, round(seconds))}",
            "-l",
            "--log-prefix",
            str(Path(folder) / "log"),
        ]
        for name, value in variables.items():
            args += ["-D", f"{name}={value}"]
        args += stack.client_args(database)
        completed = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=stack.client_env(),
            timeout=seconds + 120,
            check=False,
        )
        if completed.returncode != 0:
            raise LoadError(f"pgbench failed: {completed.stderr.strip()[-300:]}")
        latencies: list[float] = []
        for log in Path(folder).glob("log*"):
            for entry in log.read_text().splitlines():
                parts = entry.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]) / 1000)  # microseconds -> ms
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", completed.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", completed.stdout)
    return {
        "clients": clients,
        "seconds": seconds,
        "transactions": len(latencies),
        "failed": int(failed.group(1)) if failed else 0,
        "requests_per_second": round(float(match.group(1)), 1) if match else None,
        "latency_ms": {
            "mean": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "p50": round(percentile(latencies, 50), 3),
            "p90": round(percentile(latencies, 90), 3),
            "p95": round(percentile(latencies, 95), 3),
            "p99": round(percentile(latencies, 99), 3),
            "max": round(max(latencies), 3) if latencies else None,
        },
    }
