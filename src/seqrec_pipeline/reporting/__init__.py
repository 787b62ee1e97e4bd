"""Everything a run reports: metrics.json, predictions, plots, MLflow metric names (``evaluation.py``), the
dataset report (``dataset.py``) and the comparison of runs behind ``kedro compare`` (``comparison.py``)."""
