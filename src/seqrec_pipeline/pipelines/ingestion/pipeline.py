from kedro.pipeline import Pipeline, node, pipeline

from .nodes import fetch_raw, validate_raw_events


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(fetch_raw, ["params:dataset", "params:datasets"], "raw_manifest", name="fetch_raw"),
            node(
                validate_raw_events,
                ["params:dataset", "params:datasets", "params:data", "data_work_dir", "raw_manifest"],
                ["events", "rejected", "item_text", "behavior_levels", "ingest_report", "ingest_metrics"],
                name="validate_events",
            ),
        ],
        namespace="ingest",
        inputs={"data_work_dir"},
        outputs={"events", "rejected", "item_text", "behavior_levels", "ingest_report", "ingest_metrics"},
        parameters={"params:dataset", "params:datasets", "params:data"},
    )
