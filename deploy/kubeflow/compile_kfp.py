"""Compile a stage graph (``python -m seqrec_pipeline.stages``) into a Kubeflow Pipelines spec (IR YAML).

Runs with the ``kfp`` SDK in its own environment (kfp pins protobuf below the project's), so it imports
nothing of the project::

    python -m seqrec_pipeline.stages smb_decoder --output stages.json          # project environment
    python deploy/kubeflow/compile_kfp.py stages.json --image REGISTRY/seqrec:TAG \\
        --params "dataset=retailrocket" --output smb_decoder.yaml           # kfp environment

Each stage is a container task of the project image running ``kedro run --pipeline=<p> <selector>``; the
tasks only order each other (``after``): data moves through the catalog, which must point at object storage
(docs/deploy.md), never through Kubeflow artifacts.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from kfp import compiler, dsl


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _stage_component(name: str, image: str, command: list[str]):
    """A container component without inputs (a closure: KFP reads every parameter as a component input)."""

    def run_stage():  # no annotation: KFP inspects it and it would be a string here
        return dsl.ContainerSpec(image=image, command=command[:1], args=command[1:])

    run_stage.__name__ = _identifier(name)
    return run_stage


def build_pipeline(graph: dict, image: str, params: str = "", env: str = "local"):
    """The ``@dsl.pipeline`` function of ``graph`` (one container task per stage)."""
    components = {}
    for stage in graph["stages"]:
        command = ["kedro", "run", f"--pipeline={graph['pipeline']}", f"--env={env}", stage["selector"]]
        if params:
            command.append(f"--params={params}")

        components[stage["name"]] = dsl.container_component(_stage_component(stage["name"], image, command))

    @dsl.pipeline(name=graph["pipeline"].replace("_", "-"),
                  description=f"seqrec_pipeline {graph['pipeline']}, one task per stage")
    def pipeline():
        tasks = {}
        for stage in graph["stages"]:  # topological order: dependencies exist already
            task = components[stage["name"]]()
            task.set_display_name(stage["name"])
            task.set_caching_options(False)  # a stage's inputs live in the catalog, which KFP cannot fingerprint
            for dependency in stage["depends_on"]:
                task.after(tasks[dependency])
            tasks[stage["name"]] = task

    return pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="stage graph JSON (python -m seqrec_pipeline.stages)")
    parser.add_argument("--image", required=True, help="the project image (docs/deploy.md)")
    parser.add_argument("--params", default="", help="kedro --params of every stage, e.g. dataset=retailrocket")
    parser.add_argument("--env", default="local", help="Kedro configuration environment in the image")
    parser.add_argument("--output", required=True, help="the pipeline spec to write (.yaml)")
    args = parser.parse_args(argv)
    graph = json.loads(Path(args.graph).read_text())
    pipeline = build_pipeline(graph, args.image, args.params, args.env)
    compiler.Compiler().compile(pipeline, package_path=args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
