"""pandera schemas for every table that crosses a stage boundary.

Raw events are validated against a schema built from the dataset declaration
(declared behaviors, time window or plausible time range); the failure cases of that validation decide
which rows are quarantined and why.  The other schemas are the contracts of the
stage outputs and are checked when a stage writes them.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl


def raw_events_schema(behaviors: list[str], time_range: tuple[int, int] | None) -> pa.DataFrameSchema:
    """Typed raw events: every failing row is quarantined with the failed check as reason."""
    time_checks = [pa.Check.in_range(time_range[0], time_range[1])] if time_range else []
    return pa.DataFrameSchema(
        {
            "user_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1), nullable=False),
            "item_id": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1), nullable=False),
            "behavior": pa.Column(pl.Utf8, pa.Check.isin(behaviors), nullable=False),
            "timestamp": pa.Column(pl.Int64, time_checks, nullable=False),
            "session_id": pa.Column(pl.Utf8, nullable=True, required=False),
            "source_row": pa.Column(pl.Int64, nullable=False),
        },
        name="raw_events",
    )


EVENTS = pa.DataFrameSchema(
    {
        "user_id": pa.Column(pl.Utf8, nullable=False),
        "item_id": pa.Column(pl.Utf8, nullable=False),
        "behavior": pa.Column(pl.Utf8, nullable=False),
        "timestamp": pa.Column(pl.Int64, nullable=False),
        "session_id": pa.Column(pl.Utf8, nullable=True),
        "source_row": pa.Column(pl.Int64, nullable=False),
    },
    strict=True,
    name="events (02_intermediate)",
)

REJECTED = pa.DataFrameSchema(
    {
        "source_file": pa.Column(pl.Utf8, nullable=False),
        "source_row": pa.Column(pl.Int64, nullable=True),
        "reason": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1), nullable=False),
        "user_id": pa.Column(pl.Utf8, nullable=True),
        "item_id": pa.Column(pl.Utf8, nullable=True),
        "behavior": pa.Column(pl.Utf8, nullable=True),
        "timestamp": pa.Column(pl.Utf8, nullable=True),
        "raw_line": pa.Column(pl.Utf8, nullable=True),
    },
    strict=True,
    name="rejected rows (02_intermediate)",
)

_INT_LIST = pl.List(pl.Int32)
SEQUENCES = pa.DataFrameSchema(
    {
        "user_idx": pa.Column(pl.Int32, pa.Check.ge(0), unique=True, nullable=False),
        "item": pa.Column(_INT_LIST, nullable=False),
        "behavior": pa.Column(pl.List(pl.Int8), nullable=False),
        "timestamp": pa.Column(pl.List(pl.Int64), nullable=False),
        "session": pa.Column(_INT_LIST, nullable=False),
        "n_events": pa.Column(pl.Int32, pa.Check.ge(1), nullable=False),
        "n_sessions": pa.Column(pl.Int32, pa.Check.ge(1), nullable=False),
        # split points: positions into the user's sequence; -1 = user not in that protocol
        "last_event_valid": pa.Column(pl.Int32, nullable=False),
        "last_event_test": pa.Column(pl.Int32, nullable=False),
        "last_session_valid": pa.Column(pl.Int32, nullable=False),
        "last_session_test": pa.Column(pl.Int32, nullable=False),
    },
    checks=[
        pa.Check(lambda d: d.lazyframe.select(pl.col("item").list.len() == pl.col("n_events")), name="lengths"),
        pa.Check(
            lambda d: d.lazyframe.select(
                (pl.col("last_event_valid") < pl.col("last_event_test")) | (pl.col("last_event_test") == -1)
            ),
            name="last_event valid before test",
        ),
        pa.Check(
            lambda d: d.lazyframe.select(
                (pl.col("last_session_valid") < pl.col("last_session_test")) | (pl.col("last_session_test") == -1)
            ),
            name="last_session valid before test",
        ),
    ],
    strict=True,
    name="sequences (03_primary)",
)

ITEMS = pa.DataFrameSchema(
    {
        "item_idx": pa.Column(pl.Int32, pa.Check.ge(0), unique=True, nullable=False),
        "item_id": pa.Column(pl.Utf8, unique=True, nullable=False),
        "n_events": pa.Column(pl.Int32, pa.Check.ge(1), nullable=False),
    },
    checks=[pa.Check(lambda d: d.lazyframe.select(pl.col("item_idx") == pl.int_range(pl.len())), name="dense 0..N-1")],
    name="items (03_primary)",
)

USERS = pa.DataFrameSchema(
    {
        "user_idx": pa.Column(pl.Int32, pa.Check.ge(0), unique=True, nullable=False),
        "user_id": pa.Column(pl.Utf8, unique=True, nullable=False),
    },
    checks=[pa.Check(lambda d: d.lazyframe.select(pl.col("user_idx") == pl.int_range(pl.len())), name="dense 0..N-1")],
    name="users (03_primary)",
)


def check_contract(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a stage output; a failure here is a bug in this project, reported with all cases."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:  # pragma: no cover - would be an internal bug
        raise RuntimeError(f"{schema.name} violates its contract:\n{exc.failure_cases.head(20)}") from None


__all__ = ["EVENTS", "ITEMS", "REJECTED", "SEQUENCES", "USERS", "check_contract", "raw_events_schema"]
