"""Typing, validation and quarantine of raw events (docs/design.md#validation-and-quarantine).

Raw string rows are typed (timestamps -> int64 UTC seconds, behavior values ->
declared behavior names), validated lazily against ``schemas.raw_events_schema``
and split into valid events and rejected rows, each with a human reason.
``n_raw == n_valid + n_rejected`` is checked on every run.
"""

from __future__ import annotations

import logging

import pandera.polars as pa
import polars as pl

from seqrec_pipeline.data.progress import Progress
from seqrec_pipeline.dataset_spec import SINGLE_BEHAVIOR, DatasetSpec
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.parquet import ParquetParts
from seqrec_pipeline.io.readers import MalformedLines, RawTable, read_event_batches, read_events
from seqrec_pipeline.schemas import EVENTS, REJECTED, check_contract, raw_events_schema

log = logging.getLogger(__name__)

RAW_FIELDS = ("user_id", "item_id", "behavior", "timestamp")
# ISO-like layouts tried in order (one column may mix them); naive times are UTC
ISO_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f",
               "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%d %H:%M", "%Y-%m-%d")
ISO_TZ_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z")


# spellings of "no value" that pandas, SQL exports and str(None) leave in id columns; never real ids
MISSING_IDS = ["", "nan", "NaN", "NAN", "null", "NULL", "Null", "none", "None", "NONE", "<NA>"]


def _strip(values: pl.Series) -> pl.Series:
    """Trim surrounding whitespace, without copying 10M strings when there is none (the usual case)."""
    return values.str.strip_chars() if values.str.contains(r"^\s|\s$").any() else values


def resolve_unit(raw: pl.Series, unit: str, numeric: pl.Series | None = None) -> str:
    """``auto`` -> s / ms / iso from a sample of the column (other units pass through)."""
    if unit != "auto":
        return unit
    numeric = raw.cast(pl.Float64, strict=False) if numeric is None else numeric
    n_present, n_numeric = raw.is_not_null().sum(), numeric.is_not_null().sum()
    if n_present and n_numeric >= 0.5 * n_present:
        median = numeric.median()
        return "ms" if median is not None and abs(median) > 1e11 else "s"
    return "iso"


def parse_timestamps(raw: pl.Series, unit: str) -> pl.Series:
    """Strings -> int64 epoch seconds (UTC); unparseable values become null.

    ``auto`` picks numeric vs ISO for the whole column (not per row) and seconds vs
    milliseconds by magnitude, so one odd row cannot change how the others are read.
    """
    raw = _strip(raw.cast(pl.Utf8))
    numeric = raw.cast(pl.Float64, strict=False)
    unit = resolve_unit(raw, unit, numeric)
    if unit in ("s", "order"):
        return numeric.floor().cast(pl.Int64, strict=False)
    if unit == "ms":
        return (numeric // 1000).cast(pl.Int64, strict=False)
    frame = raw.to_frame("t")
    naive = [pl.col("t").str.to_datetime(f, strict=False, time_unit="ms").dt.replace_time_zone("UTC")
             for f in ISO_FORMATS]
    aware = [pl.col("t").str.to_datetime(f, strict=False, time_unit="ms").dt.convert_time_zone("UTC")
             for f in ISO_TZ_FORMATS]
    parsed = frame.select(pl.coalesce(naive + aware).dt.epoch("s").cast(pl.Int64))
    return parsed.to_series()


def _typed(rows: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    behavior = pl.lit(SINGLE_BEHAVIOR) if not spec.behaviors or "behavior" not in rows.columns else pl.col("behavior")
    if spec.behavior_values and "behavior" in rows.columns:
        mapping = {str(k): v for k, v in spec.behavior_values.items()}
        behavior = pl.col("behavior").str.strip_chars().replace_strict(mapping, default=pl.col("behavior"))
    typed = rows.with_columns(
        _strip(rows["user_id"]),
        _strip(rows["item_id"]),
        behavior.cast(pl.Utf8).alias("behavior"),
        parse_timestamps(rows["timestamp"], spec.timestamp_unit).alias("timestamp"),
    )
    typed = typed.with_columns(
        pl.when(pl.col(c).is_in(MISSING_IDS)).then(None).otherwise(pl.col(c)).alias(c) for c in ("user_id", "item_id")
    )
    if "session_id" not in typed.columns:
        typed = typed.with_columns(pl.lit(None, dtype=pl.Utf8).alias("session_id"))
    return typed.select("user_id", "item_id", "behavior", "timestamp", "session_id", "source_row")


def _time_range(spec: DatasetSpec, raw: RawTable) -> tuple[tuple[int, int] | None, str]:
    """The range timestamps must fall in (declared time_window, else plausible_time) and the reason if not."""
    window = spec.window_seconds()
    if window:
        return window, f"timestamp outside time_window {list(window)}"
    if spec.plausible_time is False or spec.timestamp_unit == "order" or raw.times_are_positions:
        return None, ""
    return spec.plausible_seconds(), f"implausible timestamp (outside plausible_time {list(spec.plausible_time)})"


def _reasons(failure_cases: pl.DataFrame, raw: pl.DataFrame, levels: dict[str, int], outside: str) -> pl.DataFrame:
    """pandera failure cases -> one readable reason per failing row index."""
    fc = failure_cases.filter(pl.col("index").is_not_null()).select("index", "column", "check")
    declared = ", ".join(levels)
    raw_ts = raw.select(pl.int_range(pl.len(), dtype=pl.Int32).alias("index"), pl.col("timestamp").alias("raw_ts"))
    fc = fc.join(raw_ts, on="index", how="left")
    col, check = pl.col("column"), pl.col("check")
    reason = (
        pl.when((col == "timestamp") & (check == "not_nullable") & pl.col("raw_ts").is_not_null())
        .then(pl.lit("unparseable timestamp"))
        .when(check == "not_nullable")
        .then(pl.lit("missing ") + col)
        .when(check.str.starts_with("str_length"))
        .then(pl.lit("empty ") + col)
        .when(check.str.starts_with("isin"))
        .then(pl.lit(f"unknown behavior (declared: {declared})"))
        .when(check.str.starts_with("in_range"))
        .then(pl.lit(outside))
        .otherwise(col + pl.lit(": failed ") + check)
    )
    return (
        fc.with_columns(reason.alias("reason"))
        .group_by("index")
        .agg(pl.col("reason").unique(maintain_order=True).str.join("; "))
    )


def validate_batch(raw: RawTable, spec: DatasetSpec, levels: dict[str, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Valid events and rejected rows (reader rejects + schema failures) of one batch of raw rows."""
    rows = raw.rows
    typed = _typed(rows, spec)
    time_range, outside = _time_range(spec, raw)
    schema = raw_events_schema(list(levels), time_range)
    try:
        schema.validate(typed, lazy=True)
        bad = pl.DataFrame(schema={"index": pl.Int32, "reason": pl.Utf8})
    except pa.errors.SchemaErrors as exc:
        structural = exc.failure_cases.filter(pl.col("index").is_null() & (pl.col("check") != "not_nullable"))
        if structural.height:
            raise InputError(
                f"{raw.source_file}: table does not match the events contract: "
                f"{structural.select('column', 'check').unique().rows()}"
            ) from None
        bad = _reasons(exc.failure_cases, rows, levels, outside)
    if bad.height:
        is_bad = pl.int_range(typed.height, dtype=pl.Int32, eager=True).is_in(bad["index"].implode())
        bad_rows = rows.with_row_index("index").filter(is_bad)  # only the (few) bad rows are copied
        rejected_schema_rows = bad_rows.select(
            pl.lit(raw.source_file).alias("source_file"),
            "source_row",
            *[pl.col(c).cast(pl.Utf8) if c in rows.columns else pl.lit(None, dtype=pl.Utf8).alias(c) for c in RAW_FIELDS],
            pl.lit(None, dtype=pl.Utf8).alias("raw_line"),
            pl.col("index").cast(pl.Int32),
        ).join(bad, on="index", how="left").drop("index")
        valid = typed.filter(~is_bad)
    else:
        rejected_schema_rows, valid = None, typed
    empty = pl.DataFrame(schema={c: pl.Int64 if c == "source_row" else pl.Utf8 for c in REJECTED.columns})
    parts = [empty, raw.unreadable] + ([rejected_schema_rows] if rejected_schema_rows is not None else [])
    rejected = pl.concat(parts, how="diagonal_relaxed").select(list(REJECTED.columns))
    n_raw = rows.height + raw.unreadable.height
    if n_raw != valid.height + rejected.height:  # the no-silent-loss invariant
        raise AssertionError(f"row accounting broken: {n_raw} raw != {valid.height} valid + {rejected.height} rejected")
    if rejected.height and spec.on_invalid == "fail":
        _fail(rejected)
    return valid, rejected


def _fail(rejected: pl.DataFrame) -> None:
    examples = "; ".join(
        f"{r['source_file']} row {r['source_row']}: {r['reason']}" for r in rejected.head(5).iter_rows(named=True)
    )
    encoding = (" If the file is not UTF-8, declare its `encoding:` (e.g. latin-1)."
                if rejected["reason"].str.starts_with("invalid UTF-8").any() else "")
    raise InputError(
        f"{rejected.height} invalid row(s) and on_invalid=fail: {examples}. Fix the rows, or set "
        "`on_invalid: quarantine` in the dataset declaration to keep them aside in rejected.parquet." + encoding
    )


def _combine(parts: list[tuple[pl.DataFrame | None, pl.DataFrame, int]],
             source: str) -> tuple[pl.DataFrame | None, pl.DataFrame, int]:
    """(valid events or None when a sink took them, rejected rows, number of valid events) of all batches."""
    n_valid = sum(n for _, _, n in parts)
    if sum(n + r.height for _, r, n in parts) == 0:
        raise InputError(f"{source}: no data rows (the file holds at most a header). Put the events in it, "
                         "or point `events:` in the dataset declaration at the right file.")
    kept = [v for v, _, _ in parts if v is not None]
    valid = (pl.concat(kept, rechunk=False) if len(kept) > 1 else kept[0]) if kept else None
    rejected = pl.concat([r for _, r, _ in parts]) if len(parts) > 1 else parts[0][1]
    if n_valid == 0:
        top = rejected.group_by("reason").len().sort("len", descending=True).head(3).rows()
        raise InputError(
            f"{source}: no valid events ({rejected.height} rows, all rejected; top reasons {top}). "
            "Check the column mapping, the declared behaviors and the time_window / plausible_time."
        )
    return valid, check_contract(REJECTED, rejected), n_valid


def validate_events(raw: RawTable, spec: DatasetSpec, levels: dict[str, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Valid events and rejected rows of a whole raw table, per the on_invalid policy."""
    valid, rejected = validate_batch(raw, spec, levels)
    valid, rejected, _ = _combine([(check_contract(EVENTS, valid), rejected, valid.height)], raw.source_file)
    return valid, rejected


def ingest_events(spec: DatasetSpec, batch_rows: int = 1_000_000, parts: ParquetParts | None = None):
    """Read, type, validate and quarantine a dataset's events batch by batch.

    Returns ``(events, rejected, behavior_levels)``.  Streaming keeps only the typed valid events
    in memory, never the whole log as strings; with ``parts``, each batch's valid events are written there
    as one Parquet part instead (a log larger than memory) and ``events`` is the number of valid events.
    A file with ragged, blank or non-UTF-8 lines is re-read whole by the careful parser so that every bad
    line is reported.
    """
    levels, batches = spec.behavior_levels, []
    source = spec.events or spec.name  # a header-only file yields no batch to name it
    progress = Progress(f"ingest: {source}")

    def add(raw: RawTable, spec: DatasetSpec) -> None:
        valid, rejected = validate_batch(raw, spec, levels)
        valid = check_contract(EVENTS, valid)
        if parts is not None:
            if valid.height:
                parts.write(valid)
            batches.append((None, rejected, valid.height))
        else:
            batches.append((valid, rejected, valid.height))
        progress.add(raw.rows.height + raw.unreadable.height)

    try:
        for raw in read_event_batches(spec, batch_rows):
            if raw.behavior_levels:  # levels declared by the files themselves (reference layout)
                levels = raw.behavior_levels
                spec = DatasetSpec.model_validate(spec.model_dump() | {"behaviors": levels})
            if spec.timestamp_unit == "auto" and "timestamp" in raw.rows.columns:
                spec = spec.model_copy(update={"timestamp_unit": resolve_unit(raw.rows["timestamp"], "auto")})
            add(raw, spec)
            source = raw.source_file
    except MalformedLines:
        log.warning("%s has ragged, blank or non-UTF-8 lines: read whole by the careful parser", source)
        batches = []
        if parts is not None:
            parts.clear()
        raw = read_events(spec)
        add(raw, spec)
        source = raw.source_file
    events, rejected, n_valid = _combine(batches, source)
    return (n_valid if parts is not None else events), rejected, levels


def ingest_stats(valid: pl.DataFrame | int, rejected: pl.DataFrame) -> dict:
    """Counts of a run; ``valid`` is the valid events or their number."""
    n_valid = valid if isinstance(valid, int) else valid.height
    by_reason = rejected.group_by("reason").len().sort("len", descending=True)
    stats = {
        "n_raw": n_valid + rejected.height,
        "n_valid": n_valid,
        "n_rejected": rejected.height,
        "rejected_by_reason": {r: int(n) for r, n in by_reason.rows()},
    }
    if rejected.height:
        log.warning(
            "%d of %d rows rejected (kept in rejected.parquet): %s",
            rejected.height, stats["n_raw"], stats["rejected_by_reason"],
        )
    return stats
