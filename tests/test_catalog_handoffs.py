"""Every dataset handed from one node to another is persisted by the catalog, in every registered pipeline.

An orchestrator (Airflow, Kubeflow) runs each node or stage as its own task in its own process, so a
MemoryDataset between two nodes would be empty in the consuming task."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def catalog_and_pipelines():
    bootstrap_project(REPO)
    from kedro.framework.project import pipelines

    with KedroSession.create(project_path=REPO) as session:
        yield session.load_context().catalog, dict(pipelines)


def test_every_handoff_between_nodes_is_persisted(catalog_and_pipelines):
    catalog, pipelines = catalog_and_pipelines
    assert len(pipelines) > 10
    in_memory: dict[str, set[str]] = {}
    for name, pipe in pipelines.items():
        consumed = {dataset for node in pipe.nodes for dataset in node.inputs}
        for dataset in sorted(pipe.all_outputs() & consumed):
            if dataset not in catalog or isinstance(catalog.get(dataset), MemoryDataset):
                in_memory.setdefault(dataset, set()).add(name)
    assert in_memory == {}, f"hand-offs kept in memory (dataset: pipelines): {in_memory}"


def test_the_former_memory_handoffs_are_json_files(catalog_and_pipelines):
    catalog, _ = catalog_and_pipelines
    for dataset, path in {"ingest.raw_manifest": "02_intermediate/ml-100k/raw_manifest.json",
                          "preprocess.preprocess_stats": "03_primary/ml-100k/preprocess_stats.json"}.items():
        assert str(catalog.get(dataset)._describe()["filepath"]).endswith(path), dataset
