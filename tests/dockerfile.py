"""The Dockerfile as data (stages, their ENV, COPY and RUN lines), for the tests that check
the images without Docker."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[list[str]] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    entrypoint: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            parts = rest.split()
            base = parts[0]
            for key, value in global_args.items():
                base = base.replace("${" + key + "}", value)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            stage = Stage(base=base, name=name)
            parent = next((s for s in stages if s.name == base), None)
            if parent is not None:  # FROM an earlier stage inherits its ENV/USER/WORKDIR
                stage.env, stage.user, stage.workdir = dict(parent.env), parent.user, parent.workdir
            stages.append(stage)
        elif keyword == "ARG":
            key, _, value = rest.partition("=")
            (stages[-1].args if stages else global_args)[key] = value
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stages[-1].env[key] = value
        elif keyword == "RUN":
            stages[-1].runs.append(rest)
        elif keyword == "COPY":
            stages[-1].copies.append([a for a in shlex.split(rest) if not a.startswith("--")])
        elif keyword == "USER":
            stages[-1].user = rest
        elif keyword == "WORKDIR":
            stages[-1].workdir = rest
        elif keyword == "ENTRYPOINT":
            stages[-1].entrypoint = json.loads(rest)
    return global_args, stages


def stage(name: str) -> Stage:
    """The stage called ``name`` of the project's Dockerfile."""
    _, stages = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return next(s for s in stages if s.name == name)
