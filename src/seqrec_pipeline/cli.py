"""Project CLI: Kedro's own `kedro run`, but user mistakes print a message, not a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from kedro.framework.cli.project import run as _kedro_run

from seqrec_pipeline.errors import find_input_error


class _FriendlyCommand(click.Command):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # re-raised unless it is a user-input error
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
@click.option("--dataset", default=None, help="dataset name (default: conf/base/globals.yml `dataset`)")
@click.option("--k", "k", default=10, show_default=True, help="cutoff of the NDCG / HR columns")
@click.option("--reporting-dir", default="data/08_reporting", show_default=True, type=click.Path())
def compare(dataset, k, reporting_dir):
    """Table of every evaluated run of a dataset (one per protocol), best merged NDCG@k first.

    Also written to <reporting-dir>/<dataset>/comparison.md, with a bar chart in comparison.png.
    """
    from seqrec_pipeline.comparison import (
        collect_metrics,
        comparison_figure,
        markdown_tables,
    )

    if dataset is None:
        import yaml

        dataset = yaml.safe_load(Path("conf/base/globals.yml").read_text())["dataset"]
    frame = collect_metrics(reporting_dir, dataset, k)
    text = markdown_tables(frame, dataset)
    out = Path(reporting_dir) / dataset / "comparison.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    png = out.with_suffix(".png")
    comparison_figure(frame, dataset, k).savefig(png.with_suffix(".tmp.png"), dpi=100)
    png.with_suffix(".tmp.png").replace(png)
    click.echo(text + f"\nwritten to {out} and {png.name}")


cli.add_command(compare)
