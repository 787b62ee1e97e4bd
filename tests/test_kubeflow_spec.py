"""The smb_decoder pipeline compiled to a Kubeflow Pipelines spec (deploy/kubeflow/compile_kfp.py), then loaded.

The kfp SDK pins protobuf below this project's, so it gets its own virtual environment, made here once and
cached (SEQREC_KFP_VENV, default ~/.cache/seqrec_pipeline/kfp-venv); the stage graph comes from the project
environment (seqrec_pipeline.stages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqrec_pipeline.stages import stage_graph

REPO = Path(__file__).resolve().parents[1]
KFP_VERSION = "2.17.3"
EXPECTED = {"ingest": [], "preprocess": ["ingest"], "embed": ["preprocess"], "tokenize": ["embed", "preprocess"],
            "train": ["preprocess", "tokenize"], "smb_decoder": ["preprocess", "tokenize", "train"]}  # fmt: skip
LOAD = """
import json, sys
from kfp import components
spec = components.load_component_from_file(sys.argv[1])
dag = spec.pipeline_spec.root.dag
print(json.dumps({"name": spec.name, "tasks": {name: sorted(t.dependent_tasks) for name, t in dag.tasks.items()}}))
"""


def kfp_python() -> str:
    venv = Path(os.environ.get("SEQREC_KFP_VENV", Path.home() / ".cache" / "seqrec_pipeline" / "kfp-venv"))
    if not (venv / "bin" / "python").exists() or subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import kfp"], capture_output=True).returncode != 0:  # fmt: skip
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"kfp=={KFP_VERSION}"], check=True)
    return str(venv / "bin" / "python")


def test_stage_graph_is_the_namespaces_in_dependency_order():
    graph = stage_graph("smb_decoder", REPO)
    assert [s["name"] for s in graph["stages"]] == list(EXPECTED)
    assert {s["name"]: s["depends_on"] for s in graph["stages"]} == EXPECTED
    assert {s["selector"] for s in graph["stages"]} == {f"--namespaces={name}" for name in EXPECTED}


@pytest.mark.slow
def test_smb_decoder_compiles_to_a_kfp_spec_that_loads(tmp_path):
    python = kfp_python()
    graph_file = tmp_path / "stages.json"
    graph_file.write_text(json.dumps(stage_graph("smb_decoder", REPO)))
    spec_file = tmp_path / "smb_decoder.yaml"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the kfp venv imports nothing of the project
    compiled = subprocess.run([python, str(REPO / "deploy" / "kubeflow" / "compile_kfp.py"), str(graph_file),
                               "--image", "registry.example/seqrec:1", "--params", "dataset=retailrocket",
                               "--output", str(spec_file)],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr[-3000:]

    spec = yaml.safe_load(spec_file.read_text())
    executors = spec["deploymentSpec"]["executors"]
    for name in EXPECTED:
        container = executors[f"exec-{name.replace('_', '-')}"]["container"]
        assert container["image"] == "registry.example/seqrec:1"
        assert container["command"] + container["args"] == ["kedro", "run", "--pipeline=smb_decoder", "--env=local",
                                                            f"--namespaces={name}", "--params=dataset=retailrocket"]

    loaded = subprocess.run([python, "-c", LOAD, str(spec_file)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    pipeline = json.loads(loaded.stdout)
    assert pipeline["name"] == "smb-decoder"
    assert pipeline["tasks"] == {name.replace("_", "-"): [d.replace("_", "-") for d in deps]
                                 for name, deps in EXPECTED.items()}
