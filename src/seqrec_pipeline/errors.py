"""Errors caused by user input: bad files, bad declarations, bad parameters.

They carry a message that says what is wrong and how to fix it; the project CLI
(`cli.py`) prints that message instead of a traceback.
"""


class InputError(ValueError):
    """A user mistake (data, declaration or parameter), with a fix in the message."""


class RunFailure(RuntimeError):
    """A process the run started (e.g. a training rank) failed; the message says which, its own error is
    in the log above."""


def find_input_error(exc: BaseException | None) -> InputError | RunFailure | None:
    """The first InputError or RunFailure in an exception chain (Kedro and plugins may wrap it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (InputError, RunFailure)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
