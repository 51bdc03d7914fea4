"""bandit over the shipped code: no finding, and every ``# nosec`` names its test and a reason.

Policy (pyproject ``[tool.bandit]``): B101 (asserts narrow types), B404/B603 (subprocesses
with argument lists, never a shell) are skipped project-wide, like ruff's S101/S603.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

TREES = ("common", "pipeline", "functions", "dags")
BANDIT = Path(sys.executable).parent / "bandit"
NOSEC = re.compile(r"#\s*nosec\b(.*)$")


def test_bandit_finds_nothing_unjustified() -> None:
    assert BANDIT.exists(), "bandit is not installed (dev extra): run 'make install'"
    result = subprocess.run(
        [str(BANDIT), "-c", "pyproject.toml", "-q", "-r", *TREES, "-f", "json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = json.loads(result.stdout)
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
    ]
    assert findings == [], "\n".join(findings)
    assert not report["errors"], report["errors"]
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the code


def test_every_nosec_names_a_test_and_a_reason() -> None:
    unjustified = []
    count = 0
    for tree in TREES:
        for path in sorted((REPO_ROOT / tree).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = NOSEC.search(line)
                if match is None:
                    continue
                count += 1
                named = re.match(r"\s+B\d{3}\b", match[1])
                # The reason follows it, or sits in the ruff noqa it pairs with.
                reason = " - " in match[1] or re.search(r"noqa: S\d+ - \S", line)
                if not (named and reason):
                    unjustified.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert unjustified == [], "\n".join(unjustified)
    assert count > 0
