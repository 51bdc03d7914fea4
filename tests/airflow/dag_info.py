"""Run by .venv-airflow's Python (not pytest): load the DAG folder, print the DAG as JSON.

Usage: python dag_info.py DAGS_FOLDER DAG_ID
"""

from __future__ import annotations

import json
import sys
from typing import Any


def describe(folder: str, dag_id: str) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder)
    info: dict[str, Any] = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
    }
    dag = bag.get_dag(dag_id)
    if dag is None:
        return info
    info["dag"] = {
        "schedule": str(dag.schedule),
        "timetable": type(dag.timetable).__name__,
        "cron": getattr(dag.timetable, "expression", None),
        "timezone": str(dag.timezone),
        "cron_timezone": str(getattr(dag.timetable, "timezone", "")),
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags),
        "doc_md": dag.doc_md or "",
    }
    info["tasks"] = {
        task.task_id: {
            "operator": type(task).__name__,
            "upstream": sorted(task.upstream_task_ids),
            "retries": task.retries,
            "retry_delay_seconds": task.retry_delay.total_seconds(),
            "dbt_executable": str(getattr(task, "dbt_executable_path", "") or ""),
            "invocation_mode": str(getattr(task, "invocation_mode", "") or ""),
            "doc": task.doc_md or "",
        }
        for task in dag.topological_sort()
    }
    return info


if __name__ == "__main__":
    print("DAG-INFO " + json.dumps(describe(sys.argv[1], sys.argv[2])))
