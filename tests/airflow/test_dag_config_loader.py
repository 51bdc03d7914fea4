"""The DAG file's YAML loader against the salesmart command's (common/config.py).

The DAG cannot import ``common`` (Airflow's environment does not hold the project), so it
keeps its own copy of the check that refuses a key given twice. Importing the DAG file
builds the DAG (Airflow, Cosmos, a ``dbt ls``: ~40 s), so this test compiles the file's two
loader classes alone, from its source, and holds them to the same answers as common's on
the same documents."""

from __future__ import annotations

import ast
from typing import Any

import pytest
import yaml

from common.config import _ConfigLoader as CommonLoader
from tests.airflow.conftest import DAGS

LOADER_CLASSES = ("_KeyGivenTwice", "_ConfigLoader")

DOCUMENTS = [
    "orchestration:\n  retries: 1\n",
    "orchestration:\n  retries: 1\n  retries: 2\n",
    "orchestration:\n  retries: 1\norchestration:\n  retries: 2\n",
    "a: 1\nb: {c: 1, c: 2}\n",
    "a: [{x: 1}, {x: 1, y: 2, x: 3}]\n",
    # A merge key's values may be overridden; a merged mapping used twice is no key twice.
    "a: &base\n  retries: 1\norchestration:\n  <<: *base\n  retries: 2\n",
    "a: {<<: &mid {<<: {retries: 1}, retries: 2}}\nb: *mid\norchestration: {retries: 3}\n",
    # The same text under two tags is two keys, as YAML says.
    "orchestration:\n  '1': a\n  1: b\n",
    "orchestration:\n  ? [1, 2]\n  : a\n  ? [1, 2]\n  : b\n",
    "orchestration: [retries\n",
]


def dag_loader() -> type[yaml.SafeLoader]:
    source = (DAGS / "transform_sales_mart.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    classes = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name in LOADER_CLASSES
    ]
    assert [node.name for node in classes] == list(LOADER_CLASSES)
    namespace: dict[str, Any] = {"yaml": yaml, "Any": Any}
    module = ast.Module(body=list(classes), type_ignores=[])
    exec(compile(module, str(DAGS / "transform_sales_mart.py"), "exec"), namespace)  # noqa: S102  # nosec B102 - the project's own file
    loader: type[yaml.SafeLoader] = namespace["_ConfigLoader"]
    return loader


def outcome(text: str, loader: type[yaml.SafeLoader]) -> tuple[str, Any]:
    """What the loader made of the text: the data, or the problem and where it is."""
    try:
        return ("loaded", yaml.load(text, Loader=loader))  # noqa: S506 - SafeLoaders  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (mark.line, mark.column) if mark else None
        return ("refused", (getattr(exc, "problem", None), where))


@pytest.mark.parametrize("text", DOCUMENTS)
def test_the_dag_reads_a_config_as_the_salesmart_command_does(text: str) -> None:
    assert outcome(text, dag_loader()) == outcome(text, CommonLoader)


def test_the_documents_hold_keys_given_twice_and_keys_that_are_not() -> None:
    """Both loaders agreeing by loading everything, or refusing everything, is no test."""
    said = [outcome(text, CommonLoader) for text in DOCUMENTS]
    problems = [detail[0] for kind, detail in said if kind == "refused"]
    assert "the key 'retries' is given twice" in problems
    assert "the key 'x' is given twice" in problems
    assert sum(kind == "loaded" for kind, _ in said) >= 4
