"""The tracking hook names MLflow runs after the pipeline, dataset, model and (for decoders) tokenizer."""

from types import SimpleNamespace

import mlflow
import pytest

from seqrec_pipeline.hooks import TrackingHooks


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # one store: creating one takes seconds


class _Catalog(dict):
    def load(self, name):
        return self[name]


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("smb_decoder", "smb_decoder · retailrocket · gamer · rqkmeans"),
        ("smb_rec", "smb_rec · retailrocket · sasrec"),  # no semantic IDs: no tokenizer in the name
        ("smb_rule", "smb_rule · retailrocket · recent"),
    ],
)
def test_run_name(tracking_uri, pipeline, expected):
    model = {"smb_decoder": "gamer", "smb_rec": "sasrec", "smb_rule": "recent"}[pipeline]
    params = {"dataset": "retailrocket", "model": model, "tokenizer": "rqkmeans", "seed": 42}
    mlflow.set_tracking_uri(tracking_uri)
    try:
        # an explicit experiment of this store: other tests may have left another store's experiment active
        experiment = mlflow.set_experiment("hooks")
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            TrackingHooks().before_pipeline_run(
                {"pipeline_names": [pipeline]}, SimpleNamespace(nodes=[]), _Catalog(parameters=params)
            )
        got = mlflow.get_run(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    assert got.data.tags["mlflow.runName"] == expected
    assert got.data.params["seed"] == "42" and "git_commit" in got.data.params
