"""Errors caused by user input: bad files, bad declarations, bad parameters.

They carry a message that says what is wrong and how to fix it; the project CLI
(`cli.py`) prints that message instead of a traceback.
"""


class InputError(ValueError):
    """A user mistake (data, declaration or parameter), with a fix in the message."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The first InputError in an exception chain (Kedro and plugins may wrap it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
