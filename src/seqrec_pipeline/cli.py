"""Project CLI: Kedro's own `kedro run`, but user mistakes print a message, not a traceback; `kedro compare`."""

from __future__ import annotations

import sys

import click
from kedro.framework.cli.project import run as _kedro_run

from seqrec_pipeline.errors import find_input_error


def end_mlflow_runs(status: str) -> None:
    """End the MLflow runs this process left open with ``status`` (``KILLED``, ``FAILED``).

    Kedro calls ``on_pipeline_error`` (where kedro-mlflow ends the run as FAILED) for exceptions only, not
    for a KeyboardInterrupt; a run still open at exit is ended as FINISHED by MLflow's exit handler.
    """
    mlflow = sys.modules.get("mlflow")  # not imported: no run was started
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status)


class _FriendlyCommand(click.Command):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            end_mlflow_runs("KILLED")
            raise
        except Exception as exc:  # re-raised unless it is a user-input error
            end_mlflow_runs("FAILED")
            err = find_input_error(exc)
            if err is None:
                raise
            click.secho(f"\nseqrec_pipeline: {err}", fg="red", err=True)
            sys.exit(2)


run = _FriendlyCommand(
    name="run", params=_kedro_run.params, callback=_kedro_run.callback, help=_kedro_run.help
)


@click.group(name="seqrec_pipeline")
def cli():
    """Project commands."""


cli.add_command(run)


@click.command(cls=_FriendlyCommand, name="compare")
@click.option("--dataset", default=None, help="dataset name (default: the project's `dataset` parameter)")
@click.option("--k", "k", default=10, show_default=True, help="cutoff of the NDCG / HR columns")
@click.option("--env", "-e", default=None, help="Kedro configuration environment")
def compare(dataset, k, env):
    """Table of every evaluated run of a dataset (one per protocol), best merged NDCG@k first.

    Runs the `compare` pipeline: the table goes to data/08_reporting/<dataset>/comparison.md, a chart to
    comparison.png (paths from the catalog); the table is printed too.
    """
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    metadata = bootstrap_project(".")
    params = {"compare": {"k": k}} | ({"dataset": dataset} if dataset else {})
    with settings.SESSION_CLASS.create(project_path=metadata.project_path, env=env, runtime_params=params) as session:
        session.run(pipeline_names=["compare"])
        catalog = session.load_context().catalog
        click.echo(catalog.load("compare.comparison"))


cli.add_command(compare)
