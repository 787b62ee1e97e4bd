"""The code file of the MLflow model (models from code): the model is this class, its state the artifacts."""

from mlflow.models import set_model

from seqrec_pipeline.serving.pyfunc import SeqrecModel

set_model(SeqrecModel())
