"""Project hooks: what every MLflow run records besides kedro-mlflow's defaults."""

from __future__ import annotations

import fcntl
import logging
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

from seqrec_pipeline.params import check_parameters

log = logging.getLogger(__name__)


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, check=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


MAX_PARAM = 250  # kedro-mlflow's truncation length
# the pipelines of the rule and discriminative baselines, which use no semantic IDs (no tokenizer in run names)
BASELINE_PIPELINES = ("smb_rule", "smb_rec", "recommend_rec", "recommend_rule")


def flatten(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def pipeline_name_of(run_params: dict[str, Any]) -> str:
    name = run_params.get("pipeline_names") or run_params.get("pipeline_name") or "__default__"
    if isinstance(name, (list, tuple)):
        name = "+".join(name) or "__default__"
    return str(name)


class TrackingStoreLock:
    """kedro-mlflow creates the tracking store and the experiment when the Kedro context is created.  Two
    runs starting together on a new store race there (sqlite migrations, experiment creation) and one fails
    with a traceback; this wrapper holds an OS file lock of the project around that step."""

    @hook_impl(hookwrapper=True)
    def after_context_created(self, context):
        with open(Path(context.project_path) / ".mlflow.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, or the process ends
            yield


class ParameterHooks:
    @hook_impl(tryfirst=True)  # before anything runs or an MLflow run starts
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        check_parameters(catalog.load("parameters"), pipeline_name_of(run_params))


class TrackingHooks:
    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        params = catalog.load("parameters") if "parameters" in catalog else {}
        pipeline_name = pipeline_name_of(run_params)
        parts = [str(pipeline_name), str(params.get("dataset", ""))]
        keys = ("model",) if str(pipeline_name) in BASELINE_PIPELINES else ("model", "tokenizer")
        parts += [str(params[k]) for k in keys if params.get(k)]
        mlflow.set_tag("mlflow.runName", " · ".join(p for p in parts if p))
        commit = git_commit()
        mlflow.set_tags({"git_commit": commit, "pipeline": str(pipeline_name)})
        # kedro-mlflow logs the parameters the nodes read; log the rest too so every run shows its
        # whole configuration (disjoint keys: MLflow refuses to log one key twice with other values)
        used = {name.split(":", 1)[1].split(".")[0] for n in pipeline.nodes for name in n.inputs
                if name.startswith("params:")}
        unused = {k: v for k, v in params.items() if k not in used}
        mlflow.log_params({k: str(v)[:MAX_PARAM] for k, v in flatten(unused).items()} | {"git_commit": commit})
        log.info("MLflow run %s (experiment '%s')", mlflow.active_run().info.run_id,
                 mlflow.get_experiment(mlflow.active_run().info.experiment_id).name)

    @hook_impl(tryfirst=True)  # before kedro-mlflow closes the run
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        run = mlflow.active_run()
        if run is None:
            return
        experiment = mlflow.get_experiment(run.info.experiment_id).name
        log.info("Done. MLflow run %s in experiment '%s' — browse it with: mlflow ui --backend-store-uri %s",
                 run.info.run_id, experiment, mlflow.get_tracking_uri())
