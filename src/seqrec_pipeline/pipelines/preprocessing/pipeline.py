from kedro.pipeline import Pipeline, node, pipeline

from .nodes import build_sequences, dataset_report


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                build_sequences,
                ["events", "item_text", "behavior_levels", "params:dataset", "params:datasets", "params:data",
                 "data_work_dir"],
                ["sequences@eager", "items", "users", "behaviors", "preprocess_stats"],
                name="build_sequences",
            ),
            node(
                dataset_report,
                ["sequences@eager", "items", "behaviors", "ingest_report", "preprocess_stats", "params:dataset",
                 "params:data"],
                ["dataset_report", "dataset_report_plot", "dataset_metrics"],
                name="dataset_report",
            ),
        ],
        namespace="preprocess",
        inputs={"events", "item_text", "behavior_levels", "ingest_report", "data_work_dir"},
        outputs={"sequences", "items", "users", "behaviors", "dataset_report", "dataset_report_plot", "dataset_metrics"},
        parameters={"params:dataset", "params:datasets", "params:data"},
    )
