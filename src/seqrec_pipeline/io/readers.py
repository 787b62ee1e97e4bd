"""Raw-format readers: files in ``data/01_raw/<ds>/`` -> string tables.

Every reader returns all fields as strings (typing and validation happen in
``data/ingest.py`` against the pandera schemas) plus a ``source_row`` column
(1-based data row, header excluded) so any rejected row can be found again in
the file.  Rows the reader itself cannot parse (truncated or over-long lines, blank
lines, lines that are not valid UTF-8, malformed JSON lines) are returned separately with
a reason: never dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from seqrec_pipeline.dataset_spec import DatasetSpec, ItemsSpec
from seqrec_pipeline.errors import InputError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".inter", ".item", ".dat"}
BLANK_BYTES = np.array([ord(c) for c in " \t\r\n"], dtype=np.uint8)  # a line of only these is blank
REJECT_COLUMNS = {"source_file": pl.Utf8, "source_row": pl.Int64, "reason": pl.Utf8, "raw_line": pl.Utf8}


@dataclass
class RawTable:
    """What a reader found: parsed rows (strings) and the rows it could not parse."""

    rows: pl.DataFrame  # string columns + source_row (Int64)
    unreadable: pl.DataFrame  # source_file, source_row, reason, raw_line
    source_file: str
    behavior_levels: dict[str, int] | None = None  # declared by the files themselves (gamer_json)
    file_columns: list[str] | None = None  # every column of the file (``rows`` may hold fewer)
    times_are_positions: bool = False  # order-only log: the timestamps are positions in the user's log


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(
            f"{what} not found: {path}. Put the file there (raw data lives in data/01_raw/<dataset>/) "
            "or fix the file name in the dataset declaration."
        )
    return path


def _clean_header(names: list[str]) -> list[str]:
    # RecBole atomic files type their headers ("user_id:token"); the type is not part of the name.
    return [n.split(":", 1)[0].strip() for n in names]


# ----------------------------------------------------------------------------- delimited text
def _default_sep(path: Path) -> str:
    return "\t" if path.suffix in {".tsv", ".inter", ".item"} else ","


def _header_line(path: Path, encoding: str) -> str:
    # utf-8-sig drops a byte-order mark, which would otherwise stick to the first column name
    with open(path, encoding="utf-8-sig" if _is_utf8(encoding) else encoding, errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


def _layout(path: Path, sep: str | None, header: bool, column_names: list[str] | None,
            encoding: str) -> tuple[str, list[str], int]:
    """(separator, column names, lines to skip) of a delimited file."""
    _require(path, "Data file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: no data rows (the file is empty). Put the data in it, or fix the file name "
                         "in the dataset declaration.")
    sep = sep or _default_sep(path)
    if header:
        names = list(column_names) if column_names else _clean_header(_header_line(path, encoding).split(sep))
        return sep, names, 1
    if not column_names:
        raise InputError(f"{path}: a headerless file needs `column_names` in the dataset declaration.")
    return sep, list(column_names), 0


def read_delimited(path: Path, sep: str | None, header: bool, column_names: list[str] | None, encoding: str,
                   only: list[str] | None = None) -> RawTable:
    """csv/tsv with every field as a string; ragged, blank and non-UTF-8 lines are reported, not dropped."""
    sep, names, skip = _layout(path, sep, header, column_names, encoding)

    wanted = [n for n in names if n in only] if only else list(names)
    if _is_utf8(encoding):
        fast = _read_clean_csv(path, sep, skip, names, wanted)
        if fast is not None:
            return RawTable(fast, empty_rejects(), path.name, file_columns=names)
    rows, unreadable = _read_careful(path, sep, skip, names, wanted, encoding)
    return RawTable(rows, unreadable, path.name, file_columns=names)


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").lower() == "utf8"


def _file_bytes(path: Path, encoding: str) -> np.ndarray:
    """The file as UTF-8 bytes, without a byte-order mark."""
    data = path.read_bytes()
    if not _is_utf8(encoding):
        try:
            data = data.decode(encoding).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid {encoding} at byte {exc.start} of the file; set `encoding:` to "
                             "the file's real encoding.") from None
    return np.frombuffer(data, dtype=np.uint8, offset=3 if data[:3] == b"\xef\xbb\xbf" else 0)


def _lines(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of every line (end: one past its newline, or the end of the data)."""
    starts = np.concatenate(([0], np.flatnonzero(data == ord("\n")) + 1))
    if starts[-1] == data.size:  # the final newline ends the last line; nothing follows it
        starts = starts[:-1]
    return starts, np.append(starts[1:], data.size).astype(np.int64)


def _read_careful(path: Path, sep: str, skip: int, names: list[str], wanted: list[str],
                  encoding: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows and rejects of a file the fast reader refused, every data line numbered as it is in the file.

    Blank lines and lines that are not valid UTF-8 are found on the bytes and rejected; the other lines go
    to pyarrow, whose single-threaded parser names the ragged ones.  Line bookkeeping is vectorized over
    the bytes.
    """
    data = _file_bytes(path, encoding)
    starts, ends = _lines(data)
    row = np.arange(1 - skip, starts.size + 1 - skip, dtype=np.int64)  # data-row number; header lines < 1
    blank = np.zeros(starts.size, dtype=bool)
    if starts.size:
        blank = (row >= 1) & (np.maximum.reduceat(~np.isin(data, BLANK_BYTES), starts) == 0)
    not_utf8, utf8_reasons, utf8_lines = _invalid_utf8(data, starts, ends, row >= 1) if _is_utf8(encoding) else (
        np.array([], dtype=np.int64), [], [])  # a transcoded file is valid UTF-8
    keep = (row >= 1) & ~blank
    keep[not_utf8] = False
    table, bad = None, []
    if keep.any():
        if np.array_equal(keep, row >= 1):  # only the header (if any) is left out: no copy
            text = data[starts[skip]:]
        else:
            text = data[np.repeat(keep, ends - starts)]
        table, bad = _parse_text(text, sep, names, wanted, use_threads=True)
        if bad:  # line numbers are only known to the single-threaded parser; this path is rare
            table, bad = _parse_text(text, sep, names, wanted, use_threads=False)
    rows = pl.from_arrow(table) if table is not None else pl.DataFrame(schema={n: pl.Utf8 for n in wanted})
    kept_rows = row[keep]
    bad_at = np.array([b[0] - 1 for b in bad], dtype=np.int64)  # parser line -> position among kept lines
    good_rows = np.delete(kept_rows, bad_at)
    if good_rows.size != rows.height:  # a quoted value spanning lines: numbering by position from here on
        log.warning("%s: a quoted value spans lines; source_row is approximate after such a row", path.name)
        good_rows = good_rows[: rows.height]
    rows = rows.with_columns(pl.Series("source_row", good_rows, dtype=pl.Int64))
    unreadable = pl.concat([
        _rejects(path, kept_rows[bad_at], [f"malformed line: expected {len(names)} fields, found {b[2]}" for b in bad],
                 [b[1] for b in bad]),
        _rejects(path, row[blank], "blank line", ""),
        _rejects(path, row[not_utf8], utf8_reasons, utf8_lines),
    ]).sort("source_row")
    return rows, unreadable


def _invalid_utf8(data: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  candidates: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """Indices, reasons and raw text of the candidate lines that are not valid UTF-8.

    Only lines with a byte >= 0x80 can be invalid, so only those are decoded (event logs are mostly ASCII).
    """
    at, reasons, texts = [], [], []
    if not starts.size:
        return np.array(at, dtype=np.int64), reasons, texts
    for i in np.flatnonzero(candidates & (np.maximum.reduceat(data, starts) >= 0x80)):
        line = data[starts[i]:ends[i]].tobytes()
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            at.append(i)
            reasons.append(f"invalid UTF-8 at byte {exc.start} of the line (0x{line[exc.start]:02x})")
            texts.append(line.decode("utf-8", "replace").rstrip("\r\n"))
    return np.array(at, dtype=np.int64), reasons, texts


def _parse_text(text: np.ndarray, sep: str, names: list[str], wanted: list[str], use_threads: bool):
    bad: list[tuple[int | None, str, int]] = []

    def on_invalid(row):
        bad.append((row.number, row.text, row.actual_columns))
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(text)),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=use_threads, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter=sep, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True, quoted_strings_can_be_null=True,
            include_columns=wanted,
        ),
    )
    return table, bad


def _rejects(path: Path, source_rows: np.ndarray, reason: str | list[str], raw_line: str | list[str]) -> pl.DataFrame:
    n = len(source_rows)
    return pl.DataFrame(
        {"source_file": [path.name] * n, "source_row": source_rows,
         "reason": reason if isinstance(reason, list) else [reason] * n,
         "raw_line": raw_line if isinstance(raw_line, list) else [raw_line] * n},
        schema=REJECT_COLUMNS,
    )


def _read_clean_csv(path: Path, sep: str, skip: int, names: list[str], wanted: list[str]) -> pl.DataFrame | None:
    """polars' multi-threaded reader for the usual case of a clean UTF-8 file.

    Returns None when a line has too many fields or is not valid UTF-8 (polars refuses) or has
    too few (the last field comes back null, as it does for a blank line): the careful reader
    then reports exactly which lines.
    """
    last = names[-1]
    keep = [i for i, n in enumerate(names) if n in wanted or n == last]
    try:
        rows = pl.read_csv(path, has_header=False, skip_rows=skip, columns=keep, separator=sep, infer_schema=False,
                           quote_char='"', schema_overrides=None)
    except pl.exceptions.NoDataError:  # header only: no rows, which ingestion reports
        return pl.DataFrame(schema={n: pl.Utf8 for n in wanted} | {"source_row": pl.Int64})
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
        return None
    if rows.width != len(keep):
        return None
    rows.columns = [names[i] for i in keep]
    if rows.height and rows[last].null_count():
        return None
    return rows.select(wanted).with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))


def read_table_file(path: Path, sep=None, header=True, column_names=None, encoding="utf8",
                    only: list[str] | None = None) -> RawTable:
    """Dispatch on the file suffix: delimited text, parquet or JSON lines (``only``: columns to keep)."""
    _require(path, "Data file")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return read_delimited(path, sep, header, column_names, encoding, only)
    if suffix == ".parquet":
        rows = pl.read_parquet(path)
        # pandas stores integer ids that have a gap as floats: NaN is no value, and 7.0 is the id 7
        floats = [c for c, t in rows.schema.items() if t.is_float()]
        rows = rows.with_columns(pl.col(floats).fill_nan(None))
        whole = [c for c in floats if ((rows[c] % 1 == 0) & (rows[c].abs() < 2**53)).all()]
        rows = rows.with_columns(pl.col(whole).cast(pl.Int64)).with_columns(pl.all().cast(pl.Utf8)).with_columns(
            pl.int_range(1, rows.height + 1, dtype=pl.Int64).alias("source_row")
        )
        return RawTable(rows, empty_rejects(), path.name)
    if suffix in {".jsonl", ".ndjson"}:
        return _read_jsonl(path, encoding)
    raise InputError(f"{path}: unsupported file type '{suffix}'. Use csv/tsv/txt, parquet or jsonl.")


def _read_jsonl(path: Path, encoding: str) -> RawTable:
    lines = path.read_text(encoding=encoding).splitlines()
    records, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            records.append({k: None if v is None else str(v) for k, v in obj.items()} | {"source_row": number})
        except ValueError as exc:
            bad.append((number, f"malformed JSON line ({exc})", line))
    rows = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame({"source_row": []})
    rows = rows.with_columns(pl.col("source_row").cast(pl.Int64))
    unreadable = pl.DataFrame(
        {"source_file": [path.name] * len(bad), "source_row": [b[0] for b in bad], "reason": [b[1] for b in bad],
         "raw_line": [b[2] for b in bad]},
        schema=REJECT_COLUMNS,
    )
    return RawTable(rows, unreadable, path.name)


def _canonical(spec: DatasetSpec, file_columns: list[str], path: Path) -> dict[str, str]:
    """file column -> canonical name, after checking the required columns are there."""
    required = ["user_id", "item_id"] + (["behavior"] if spec.behaviors else []) + (
        [] if spec.timestamp_unit == "order" else ["timestamp"]
    )
    present = set(file_columns) - {"source_row"}
    missing = [f"{c} (column '{spec.column(c)}')" for c in required if spec.column(c) not in present]
    if missing:
        fix = _separator_hint(spec, path, [spec.column(c) for c in required]) or (
            "Map them with `columns: {canonical: file_column}` in the dataset declaration.")
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}; the file has {sorted(present)}. "
                         + fix)
    return {spec.column(c): c for c in CANONICAL if spec.column(c) in present}


def _separator_hint(spec: DatasetSpec, path: Path, wanted: list[str]) -> str:
    """The fix when the header, split by another usual separator, has every wanted column."""
    if not spec.header or spec.column_names or path.suffix.lower() not in TEXT_SUFFIXES:
        return ""
    first, sep = _header_line(path, spec.encoding), spec.sep or _default_sep(path)
    for other in (",", ";", "\t", "|"):
        if other != sep and other in first and set(wanted) <= set(_clean_header(first.split(other))):
            return f"The file looks {other!r}-separated: set `sep: {json.dumps(other)}` in the dataset declaration."
    return ""


CANONICAL = ("user_id", "item_id", "behavior", "timestamp", "session_id")


def read_events(spec: DatasetSpec) -> RawTable:
    """Raw events of a dataset, columns renamed to the canonical names (still strings)."""
    if spec.format == "gamer_json":
        return read_gamer_json(spec)
    path = spec.raw_dir / spec.events
    raw = read_table_file(path, spec.sep, spec.header, spec.column_names, spec.encoding,
                          only=[spec.column(c) for c in CANONICAL])
    rename = _canonical(spec, raw.file_columns or raw.rows.columns, path)
    rows = raw.rows.select([pl.col(src).alias(dst) for src, dst in rename.items()] + ["source_row"])
    if spec.timestamp_unit == "order":
        rows = _order_as_time(rows)
    return RawTable(rows, raw.unreadable, raw.source_file, times_are_positions=spec.timestamp_unit == "order")


class MalformedLines(Exception):
    """A streamed file turned out to have lines the fast reader cannot read or number (ragged, blank, not UTF-8)."""


def read_event_batches(spec: DatasetSpec, batch_rows: int = 1_000_000) -> Iterator[RawTable]:
    """Raw events in batches of rows, so a large log is never held as strings all at once.

    Clean UTF-8 delimited files are streamed; everything else (parquet, JSON lines, the reference
    layout, order-only logs that need whole user logs, other encodings) comes as one batch.  A
    streamed file with ragged, blank or non-UTF-8 lines raises :class:`MalformedLines`: read it with
    :func:`read_events`, whose careful parser reports every bad line.
    """
    path = spec.raw_dir / spec.events if spec.events else None
    streamable = (spec.format == "events" and spec.timestamp_unit != "order" and path.suffix.lower() in TEXT_SUFFIXES
                  and _is_utf8(spec.encoding))
    if not streamable:
        yield read_events(spec)
        return
    sep, names, skip = _layout(path, spec.sep, spec.header, spec.column_names, spec.encoding)
    rename = _canonical(spec, names, path)
    keep = [n for n in names if n in rename or n == names[-1]]  # the last field shows short lines
    frame = pl.scan_csv(path, has_header=False, skip_rows=skip, separator=sep, quote_char='"',
                        schema={n: pl.Utf8 for n in names})
    offset = 0
    try:
        for batch in frame.select(keep).collect_batches(chunk_size=batch_rows):
            if batch[names[-1]].null_count():
                raise MalformedLines(path)
            rows = batch.select([pl.col(src).alias(dst) for src, dst in rename.items()]).with_columns(
                pl.int_range(offset + 1, offset + batch.height + 1, dtype=pl.Int64).alias("source_row"))
            offset += batch.height
            yield RawTable(rows, empty_rejects(), path.name, file_columns=names)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
        raise MalformedLines(path) from None


def _order_as_time(rows: pl.DataFrame) -> pl.DataFrame:
    """Order-only logs: the position in the user's log is the time and every event is its own session."""
    position = pl.int_range(pl.len()).over("user_id").cast(pl.Utf8)
    return rows.with_columns(position.alias("timestamp"), position.alias("session_id"))


# ----------------------------------------------------------------------------- reference JSON layout
def _load_json(path: Path) -> dict:
    _require(path, "Reference-layout file")
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}). Re-export the file.") from None


def _flatten(per_user: dict[str, list]) -> tuple[np.ndarray, list]:
    users = list(per_user)
    lengths = np.fromiter((len(per_user[u]) for u in users), dtype=np.int64, count=len(users))
    values = [v for u in users for v in per_user[u]]
    return np.repeat(np.asarray(users, dtype=object), lengths), values


def read_gamer_json(spec: DatasetSpec) -> RawTable:
    """The reference (GAMER/SeqRec, LC-Rec) layout: single, MB or SMB, detected from the files present.

    - SMB: ``<D>.SMB.{inter,behavior,session,time}.json`` (time "%Y-%m-%d %H:%M:%S")
    - MB:  ``<D>.MB.inter.json`` + ``<D>.MB.behavior.json`` (order only)
    - single: ``<D>.inter.json`` (order only)
    Behavior levels come from ``<D>.behavior_level.json`` unless the declaration gives them.
    """
    d, prefix = spec.raw_dir, spec.prefix or spec.name
    smb, mb = d / f"{prefix}.SMB.inter.json", d / f"{prefix}.MB.inter.json"
    if smb.exists():
        kind, parts = "SMB", {"item_id": smb, "behavior": d / f"{prefix}.SMB.behavior.json",
                              "session_id": d / f"{prefix}.SMB.session.json", "timestamp": d / f"{prefix}.SMB.time.json"}
    elif mb.exists():
        kind, parts = "MB", {"item_id": mb, "behavior": d / f"{prefix}.MB.behavior.json"}
    else:
        kind, parts = "single", {"item_id": _require(d / f"{prefix}.inter.json", "Interaction file")}
    columns: dict[str, list] = {}
    users = None
    lengths = None
    for column, path in parts.items():
        per_user = _load_json(path)
        if lengths is None:
            lengths = {u: len(v) for u, v in per_user.items()}
            users, values = _flatten(per_user)
        else:
            mismatch = [u for u, n in lengths.items() if len(per_user.get(u, ())) != n]
            if mismatch:
                raise InputError(
                    f"{path}: lists are not parallel to {parts['item_id'].name} for {len(mismatch)} user(s), "
                    f"e.g. user '{mismatch[0]}'. Every {kind} file must hold one entry per interaction."
                )
            _, values = _flatten(per_user)
        columns[column] = [None if v is None else str(v) for v in values]
    rows = pl.DataFrame({"user_id": users.astype(str).tolist() if len(users) else [], **columns})
    if kind != "SMB":
        rows = _order_as_time(rows)
    rows = rows.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    levels = None
    level_file = d / f"{prefix}.behavior_level.json"
    if kind != "single" and not spec.behaviors:
        levels = {str(k): int(v) for k, v in _load_json(level_file).items()}
    return RawTable(rows, empty_rejects(), parts["item_id"].name, behavior_levels=levels,
                    times_are_positions=kind != "SMB")


# ----------------------------------------------------------------------------- items
def read_items(spec: DatasetSpec) -> pl.DataFrame:
    """Item table (item_id + text fields as strings); empty when the dataset declares none."""
    if spec.format == "gamer_json" and spec.items is None:
        path = spec.raw_dir / f"{spec.prefix or spec.name}.item.json"
        if not path.exists():
            return pl.DataFrame(schema={"item_id": pl.Utf8})
        meta = _load_json(path)
        fields = sorted({k for v in meta.values() if isinstance(v, dict) for k in v})
        data = {"item_id": list(meta)}
        for f in fields:
            data[f] = [_text(v.get(f)) if isinstance(v, dict) else None for v in meta.values()]
        return pl.DataFrame(data, schema={c: pl.Utf8 for c in data})
    if spec.items is None:
        return pl.DataFrame(schema={"item_id": pl.Utf8})
    items: ItemsSpec = spec.items
    raw = read_table_file(spec.raw_dir / items.file, items.sep, items.header, items.column_names, spec.encoding)
    wanted = [items.id_column, *items.text_fields]
    missing = [c for c in wanted if c not in raw.rows.columns]
    if missing:
        raise InputError(
            f"{spec.raw_dir / items.file}: missing item column(s) {missing}; the file has "
            f"{[c for c in raw.rows.columns if c != 'source_row']}. Fix `items:` in the dataset declaration."
        )
    return raw.rows.select(pl.col(items.id_column).alias("item_id"), *[pl.col(c) for c in items.text_fields])


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(_text(v) or "" for v in value).strip() or None
    return str(value)
