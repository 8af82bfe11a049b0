"""``metrics.csv``: a Lightning logger that appends, so a resumed run continues its file.

Lightning's own CSV logger starts the file afresh; this one reads an existing header and appends. Rows are
keyed by step: metrics logged at the same step (the SAC losses and the episode statistics) share one row.
Columns are every metric seen; when a new one appears the file is rewritten once with the wider header.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["MetricsCSVLogger"]


class MetricsCSVLogger(Logger):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._columns: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self._columns = next(csv.reader(f), [])
        self._pending: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return "metrics_csv"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run directory's ``config.yaml`` holds the resolved config."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._pending is not None and self._pending.get("step") == step:
            self._pending.update(metrics)
            return
        self._flush()
        self._pending = {"step": step, **metrics}

    @rank_zero_only
    def save(self) -> None:
        self._flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._flush()

    def _flush(self) -> None:
        row, self._pending = self._pending, None
        if row is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = [k for k in row if k not in self._columns]
        if new or not self.path.is_file():
            old_rows = []
            if self.path.is_file():
                with open(self.path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self._columns = self._columns + new
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._columns)
                writer.writeheader()
                writer.writerows([*old_rows, row])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(row)
