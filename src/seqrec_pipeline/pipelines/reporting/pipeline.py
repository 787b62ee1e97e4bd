"""The report of an evaluated run (composed into every evaluation pipeline under its namespace) and the
``compare`` pipeline over every run of a dataset."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import compare, report


def create_pipeline(namespace: str, *, generative: bool, behavior_accuracy: bool = False,
                    repeat_aware: bool = False, **kwargs) -> Pipeline:
    """``<namespace>.predictions`` -> ``<namespace>.metrics`` (metrics.json), ``.metrics_plot``, ``.test_metrics``;
    with ``repeat_aware`` also ``repeat_predictions`` -> ``repeat_metrics``, ... (the model + its repeat /
    explore mixture, reported as model ``<model>+repeat``)."""
    inputs = {"predictions": "predictions", "items": "items", "behaviors": "behaviors", "eval_params": "params:eval",
              "dataset": "params:dataset", "model": "params:model", "protocol": "params:split.protocol"}
    if generative:
        inputs["tokenizer"] = "params:tokenizer"
    if behavior_accuracy:
        inputs["behavior_accuracy"] = "behavior_accuracy"
    nodes = [node(update_wrapper(partial(report, pipeline_name=namespace), report), inputs,
                  ["metrics", "metrics_plot", "test_metrics"], name="report")]
    if repeat_aware:
        mixture = update_wrapper(partial(report, pipeline_name=namespace, variant="repeat"), report)
        nodes.append(node(mixture, inputs | {"predictions": "repeat_predictions"},
                          ["repeat_metrics", "repeat_metrics_plot", "repeat_test_metrics"], name="report_repeat"))
    return pipeline(
        nodes,
        namespace=namespace,
        inputs={"items", "behaviors"},
        parameters={p for p in inputs.values() if p.startswith("params:")},
    )


def create_compare_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(compare, ["evaluated_runs", "evaluated_predictions", "served_models", "params:dataset",
                        "params:compare.k"],
              ["comparison", "comparison_plot"], name="compare")],
        namespace="compare",
        parameters={"params:dataset", "params:compare.k"},
    )
