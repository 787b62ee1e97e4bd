"""Project CLI: Kedro's own `kedro run`, but user mistakes print a message, not a traceback."""

from __future__ import annotations

import sys

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
