"""The MLflow model of a trained recommender: a ``mlflow.pyfunc.PythonModel`` over :class:`Recommender`.

Logged as *models from code* (``pyfunc_entry.py`` is the model's code file), so the MLflow model holds no pickle:
its artifacts are the plain files of ``Recommender.save`` (safetensors weights, JSON, Parquet).  Why not
kedro-mlflow's ``pipeline_ml_factory``: it serves a Kedro inference pipeline, so the served model would need
the project's catalog and a Kedro session per call and would pickle the pipeline and its fitted inputs, while a
recommender request (a raw history) is not a dataset of the log; this class answers it with the same library
functions the pipelines call, without Kedro.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import Array, ColSpec, Schema

from seqrec_pipeline.errors import InputError

from .recommender import Recommender
from .requests import answer

ENTRY = Path(__file__).with_name("pyfunc_entry.py")
SIGNATURE = ModelSignature(inputs=Schema([
    ColSpec(Array("string"), "items"),
    ColSpec(Array("string"), "behaviors"),
    ColSpec(Array("long"), "timestamps"),
    ColSpec(Array("string"), "request_behaviors", required=False),
    ColSpec("long", "k", required=False),
]))


class SeqrecModel(mlflow.pyfunc.PythonModel):
    """Request rows (raw histories) -> ranked raw item ids per requested behavior (``requests.answer``)."""

    def load_context(self, context) -> None:
        self.recommender = Recommender.load(dict(context.artifacts))

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[dict]:
        try:
            return answer(self.recommender, model_input)
        except InputError as error:  # the scoring server answers 400 to this code
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


def input_example(recommender: Recommender, sequences, n_events: int = 5) -> dict:
    """A request built from the last events of the log's first user (raw ids)."""
    row = sequences.row(0, named=True)
    items = recommender.item_ids[row["item"][-n_events:]].tolist()
    names = [recommender.behaviors.names[b] for b in row["behavior"][-n_events:]]
    times = [int(t) for t in (row.get("timestamp") or range(len(row["item"])))[-n_events:]]
    return {"items": items, "behaviors": names, "timestamps": times,
            "request_behaviors": list(recommender.behaviors.names), "k": min(10, recommender.settings.beam_size)}


def log_model(recommender: Recommender, name: str, example: dict, tags: dict[str, str] | None = None) -> dict:
    """Log the recommender as an MLflow model of the active run and register it as ``name``, ``tags`` on the new
    version (what it was fitted for: the registry's versions of one name can come from either split protocol);
    returns {name, version, model_uri, registered_uri, run_id, tags}."""
    import pandas as pd
    import torch

    from seqrec_pipeline import __version__

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = recommender.save(tmp)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(ENTRY), artifacts=artifacts, signature=SIGNATURE,
            input_example=pd.DataFrame([example]), registered_model_name=name,
            # the environment is the project's own; listing it skips MLflow's requirement inference, which
            # would load the model in a subprocess
            pip_requirements=[f"seqrec-pipeline=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
                              f"mlflow=={mlflow.__version__}"],
        )
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, info.registered_model_version, key, value)
    return {"name": name, "version": int(info.registered_model_version), "model_uri": info.model_uri,
            "registered_uri": f"models:/{name}/{info.registered_model_version}", "run_id": info.run_id,
            "tags": dict(tags or {})}
