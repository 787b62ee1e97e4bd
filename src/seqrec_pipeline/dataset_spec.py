"""Dataset declarations: where a dataset's raw files are and how to read them.

Built-in declarations live in ``conf/base/parameters_datasets.yml`` under the
``datasets:`` key; users add their own in ``conf/local/`` (parameters are merged
softly, see ``settings.py``).  This module validates a declaration into a
``DatasetSpec`` and turns every mistake into an ``InputError`` that names the
dataset, the field and the fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seqrec_pipeline.errors import InputError

CANONICAL_COLUMNS = ("user_id", "item_id", "behavior", "timestamp", "session_id")
SINGLE_BEHAVIOR = "interaction"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FetchSpec(_Strict):
    """Raw files extracted from a PyPI wheel, downloaded with pip (never installed)."""

    pypi: str = Field(description="pip requirement, e.g. recbole==1.2.1")
    sha256: str = Field(description="sha256 of the wheel file")
    members: dict[str, str] = Field(description="path inside the wheel -> file name in the raw folder")


class ItemsSpec(_Strict):
    """Optional item table with text fields (used by the embedding stage)."""

    file: str
    id_column: str = "item_id"
    text_fields: list[str] = Field(default_factory=list)
    sep: str | None = None
    header: bool = True
    column_names: list[str] | None = None


class FilterSpec(_Strict):
    min_user_events: int = Field(5, ge=1)
    min_item_events: int = Field(5, ge=1)
    min_sessions: int = Field(3, ge=3, description="users with fewer sessions are not in last_session splits")


class DatasetSpec(_Strict):
    """One dataset's declaration (see README, "Add your own dataset")."""

    name: str
    format: Literal["events", "gamer_json"] = "events"
    path: str | None = Field(None, description="raw folder; default data/01_raw/<name>")
    fetch: FetchSpec | None = None
    # --- format: events
    events: str | None = Field(None, description="events file (csv/tsv/txt/parquet/jsonl) inside the raw folder")
    sep: str | None = Field(None, description="csv separator; default ',' ('\\t' for .tsv/.inter)")
    header: bool = True
    column_names: list[str] | None = Field(None, description="names for a headerless csv")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> column in the file")
    behavior_values: dict[str, str] | None = Field(
        None, description="raw behavior value -> behavior name (e.g. ratings 1..5 -> dislike/neutral/like)"
    )
    # --- format: gamer_json
    prefix: str | None = Field(None, description="file prefix D of <D>.inter.json etc.; default the name")
    # --- common
    behaviors: dict[str, int] = Field(
        default_factory=dict, description="behavior -> level; exactly one at the top level. Empty: single-behavior"
    )
    timestamp_unit: Literal["auto", "s", "ms", "iso", "order"] = "auto"
    time_window: tuple[str, str] | None = Field(None, description="inclusive [start, end] ISO dates/times, UTC")
    plausible_time: tuple[str, str] | Literal[False] = Field(
        ("1990-01-01", "now"),
        description="inclusive [start, end] of believable event times, ISO dates/times (UTC unless an offset is "
        "given); 'now' is the time of the run plus one day. Rows outside are rejected as 'implausible timestamp'. "
        "Widen it for older logs (e.g. ['1970-01-01', 'now']) or set `false` to turn the check off. Not applied "
        "when a time_window is declared (the window is checked instead) nor with timestamp_unit 'order' "
        "(positions, not times).",
    )
    session_gap_minutes: float = Field(30.0, gt=0)
    items: ItemsSpec | None = None
    filters: FilterSpec = Field(default_factory=FilterSpec)
    on_invalid: Literal["quarantine", "fail"] = "quarantine"
    encoding: str = "utf8"

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(CANONICAL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown canonical column(s) {sorted(unknown)}; allowed: {list(CANONICAL_COLUMNS)}")
        return value

    @field_validator("plausible_time", mode="before")
    @classmethod
    def _plausible_shape(cls, value):
        if value is False or (isinstance(value, list | tuple) and len(value) == 2):
            return value
        raise ValueError("give [start, end] ISO dates/times (end may be 'now'), or false to turn the check off")

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSpec":
        if self.format == "events" and not self.events:
            raise ValueError("format 'events' needs `events: <file name>`")
        if self.behaviors:
            top = max(self.behaviors.values())
            at_top = [b for b, lvl in self.behaviors.items() if lvl == top]
            if len(at_top) != 1:
                raise ValueError(
                    f"exactly one behavior must hold the top level {top} (the target behavior), got {at_top}; "
                    "give the target behavior a strictly higher level"
                )
        self.window_seconds()  # parse early
        self.plausible_seconds()
        return self

    # ----------------------------------------------------------------- derived
    @property
    def raw_dir(self) -> Path:
        return Path(self.path) if self.path else Path("data/01_raw") / self.name

    @property
    def behavior_levels(self) -> dict[str, int]:
        """Ordered behavior -> level; single-behavior data has one implicit behavior."""
        return dict(self.behaviors) if self.behaviors else {SINGLE_BEHAVIOR: 0}

    @property
    def target_behavior(self) -> str:
        levels = self.behavior_levels
        return max(levels, key=levels.get)

    @property
    def is_multi_behavior(self) -> bool:
        return len(self.behavior_levels) > 1

    def column(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)

    def window_seconds(self) -> tuple[int, int] | None:
        return None if self.time_window is None else _bounds("time_window", self.time_window)

    def plausible_seconds(self) -> tuple[int, int] | None:
        return None if self.plausible_time is False else _bounds("plausible_time", self.plausible_time)


def _bounds(field: str, values: tuple[str, str]) -> tuple[int, int]:
    try:
        start, end = (_parse_bound(v, is_end=i == 1) for i, v in enumerate(values))
    except ValueError as exc:
        raise ValueError(f"{field} {list(values)}: {exc}") from None
    if end < start:
        raise ValueError(f"{field} end {values[1]} is before start {values[0]}")
    return start, end


def _parse_bound(value: str, is_end: bool) -> int:
    text = str(value)
    if text == "now":  # a day of slack for clocks and time zones
        return int(datetime.now(timezone.utc).timestamp()) + 86400
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    seconds = int(ts.timestamp())
    if is_end and len(text) == 10:  # a bare date as end bound covers that whole day
        seconds += 86400 - 1
    return seconds


def resolve_dataset(name: str, declarations: dict) -> DatasetSpec:
    """Validate the declaration of ``name`` from the ``datasets`` parameter."""
    declarations = declarations or {}
    if name not in declarations:
        known = ", ".join(sorted(declarations)) or "none"
        raise InputError(
            f"dataset '{name}' is not declared (known: {known}). Declare it under `datasets: {name}: ...` "
            "in conf/local/parameters_datasets.yml (see README, 'Add your own dataset')."
        )
    raw = dict(declarations[name] or {})
    raw.setdefault("name", name)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(declaration)'}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"declaration of dataset '{name}' is invalid: {problems}") from None
