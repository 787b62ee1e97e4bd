"""Progress of the long data stages: rows done and rate, logged once per batch."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Progress:
    """``add(rows)`` after each batch logs ``<what>: <done> of <total> rows (<rate> M rows/s)``."""

    def __init__(self, what: str, total: int | None = None):
        self.what, self.total, self.done, self.t0 = what, total, 0, time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        of = f" of {self.total:,}" if self.total else ""
        log.info("%s: %s%s rows (%.2f M rows/s)", self.what, f"{self.done:,}", of, rate / 1e6)
