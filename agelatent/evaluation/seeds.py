"""One configuration trained with several seeds: the mean and spread of its evaluation over the runs.

A training seed changes the policy a configuration learns, so one run's success rate says little about the
configuration. Evaluate every seed's policy on the same protocol (``agelatent-eval``, one output directory per
run), then :func:`seed_spread` reads each run's ``results.csv`` row of the editor and gives every metric's
mean and sample standard deviation over the runs (the "0.70 ± 0.02" of the findings). The spread is between
training seeds; each run's own confidence interval, over its edits, stays in its ``results.md``.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_METRICS", "Spread", "editor_row", "seed_spread"]

# results.csv columns reported by default: the protocol's verdicts, the judges' readings and the cost.
DEFAULT_METRICS = (
    "success_rate",
    "robust_success_rate",
    "realness/kept",  # evaluator=realness: the age change that survives what a person sees
    "gender_flip_rate",
    "world_calls_per_edit",
    "seconds_per_edit",
)


@dataclass(frozen=True)
class Spread:
    runs: int
    mean: float
    sd: float  # sample standard deviation over the runs (0 for one run)


def editor_row(path: str | Path, editor: str) -> dict[str, str]:
    """``editor``'s row of an ``agelatent-eval`` ``results.csv``."""
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("editor") == editor:
                return row
    raise ValueError(f"{path} has no row of editor {editor!r}: name an editor that evaluation ran")


def seed_spread(
    runs: Sequence[tuple[str | Path, str]], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, Spread | None]:
    """Mean and standard deviation over ``runs`` (``(results.csv, editor)``, one per training seed) of each
    metric; ``None`` for a metric that some run's evaluation did not measure (``realness/kept`` needs
    ``evaluator=realness``)."""
    if not runs:
        raise ValueError("give at least one run: <eval dir>:<editor>")
    rows = [editor_row(path, editor) for path, editor in runs]
    out: dict[str, Spread | None] = {}
    for metric in metrics:
        values = [row.get(metric, "") for row in rows]
        if any(v == "" for v in values):
            out[metric] = None
            continue
        numbers = [float(v) for v in values]
        sd = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        out[metric] = Spread(len(numbers), statistics.fmean(numbers), sd)
    return out
