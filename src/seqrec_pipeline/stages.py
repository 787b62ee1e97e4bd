"""A registered pipeline as stages for an orchestrator: ``python -m seqrec_pipeline.stages <pipeline> --output g.json``.

A stage is a top-level namespace (``ingest``, ``preprocess``, ..., the evaluating pipeline's own), the unit
that ``kedro run --namespaces=<stage>`` runs; nodes outside any namespace are stages of their own
(``kedro run --nodes=<node>``).  The grouping is Kedro's ``group_nodes_by("namespace")``, the one
``kedro airflow create --group-by=namespace`` uses, so the Airflow DAG and the Kubeflow spec have the same tasks.
Stages hand data over through the catalog only (tests/test_catalog_handoffs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqrec_pipeline.errors import InputError


def stage_graph(pipeline_name: str, project_path: str | Path = ".") -> dict:
    """``{"pipeline", "stages": [{"name", "selector", "depends_on"}]}`` in a topological order."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path(project_path).resolve())
    if pipeline_name not in pipelines:
        raise InputError(f"unknown pipeline {pipeline_name!r}; registered: {', '.join(sorted(pipelines))}")
    groups = pipelines[pipeline_name].group_nodes_by(group_by="namespace")
    stages = {
        group.name: {
            "name": group.name,
            "selector": (f"--namespaces={group.name}" if group.type == "namespace"
                         else f"--nodes={','.join(group.nodes)}"),
            "depends_on": sorted(group.dependencies),
        }
        for group in groups
    }
    ordered, done = [], set()
    while len(ordered) < len(stages):  # a few stages: a simple Kahn pass, deterministic by name
        ready = sorted(name for name, s in stages.items() if name not in done and set(s["depends_on"]) <= done)
        if not ready:
            raise ValueError(f"stages of {pipeline_name} depend on each other in a cycle")
        for name in ready:
            ordered.append(stages[name])
            done.add(name)
    return {"pipeline": pipeline_name, "stages": ordered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--project", default=".", help="the Kedro project folder")
    parser.add_argument("--output", required=True, help="the JSON file to write (Kedro logs to stdout)")
    args = parser.parse_args(argv)
    try:
        graph = stage_graph(args.pipeline, args.project)
    except InputError as exc:
        print(f"seqrec_pipeline: {exc}", file=sys.stderr)
        return 2
    Path(args.output).write_text(json.dumps(graph, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
