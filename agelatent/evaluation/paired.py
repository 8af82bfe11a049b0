"""Two editors on the same edits: did one succeed more often, or only by chance?

Both editors ran the same protocol (the same start faces and targets), so their per-edit outcomes are paired.
:func:`mcnemar` is the exact McNemar test: only the *discordant* edits (one editor succeeded, the other did not)
carry information, and under "no difference" each discordant edit is a fair coin. :func:`paired_bootstrap` gives
a confidence interval for the difference in success rate by resampling edits (pairs kept together).
:func:`edit_outcomes` reads per-edit successes from an ``edits.csv`` that ``agelatent-eval`` wrote;
:func:`pair_runs` pairs them across several runs (training seeds), run by run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["McNemar", "edit_outcomes", "eval_runs", "mcnemar", "pair_runs", "paired_bootstrap"]

Outcomes = Mapping[tuple[int, float], tuple[bool, bool]]  # (seed, target) -> (success, robust success)


@dataclass(frozen=True)
class McNemar:
    edits: int  # paired edits
    a_only: int  # edits only A got right
    b_only: int  # edits only B got right
    p: float  # two-sided exact p-value

    @property
    def difference(self) -> float:
        """A's success rate minus B's."""
        return (self.a_only - self.b_only) / self.edits


def mcnemar(a: Sequence[bool] | torch.Tensor, b: Sequence[bool] | torch.Tensor) -> McNemar:
    """Exact two-sided McNemar test of paired successes ``a`` and ``b`` (one entry per edit, same order)."""
    a, b = torch.as_tensor(a, dtype=torch.bool), torch.as_tensor(b, dtype=torch.bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"paired outcomes must be two equal-length, non-empty 1-D sequences, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return McNemar(len(a), a_only, b_only, min(1.0, 2 * tail))


def paired_bootstrap(
    a: Sequence[bool] | torch.Tensor, b: Sequence[bool] | torch.Tensor, draws: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(A's success rate − B's, and its 95% percentile interval) over ``draws`` resamples of the edits."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    diff = a - b
    idx = torch.randint(0, len(diff), (draws, len(diff)), generator=torch.Generator().manual_seed(seed))
    means = diff[idx].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(diff.mean()), low, high


def eval_runs(spec: str) -> list[tuple[Path, str]]:
    """``"<eval dir>:<editor>[,<eval dir>:<editor>...]"`` (one ``agelatent-eval`` output directory per run, e.g.
    per training seed) -> ``[(eval dir, editor), ...]``: the command-line form of the experiments' scripts."""
    runs = []
    for part in spec.split(","):
        directory, _, editor = part.rpartition(":")
        if not directory or not editor:
            raise ValueError(f"{part!r}: give each run as <eval dir>:<editor>")
        runs.append((Path(directory), editor))
    return runs


def edit_outcomes(path: str | Path, editor: str) -> dict[tuple[int, float], tuple[bool, bool]]:
    """``{(seed, target): (success, robust success)}`` of ``editor``'s rows in an ``edits.csv``: the verdicts
    ``agelatent-eval`` wrote there (:func:`~agelatent.reports.tables.write_edits_csv`, judged as the summary's
    rates are), not judged again here."""
    out = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"success", "robust_success"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path} has no {' or '.join(sorted(missing))} column (written before edits.csv carried the "
                "protocol's verdict): rerun agelatent-eval to pair its edits"
            )
        for row in reader:
            if row["editor"] == editor:
                key = (int(row["seed"]), float(row["target"]))
                out[key] = (row["success"] == "1", row["robust_success"] == "1")
    if not out:
        raise ValueError(f"{path} has no rows of editor {editor!r}")
    return out


def pair_runs(
    first: Sequence[Outcomes], second: Sequence[Outcomes]
) -> tuple[list[tuple[bool, bool]], list[tuple[bool, bool]]]:
    """The outcomes of two sides' runs (e.g. one per training seed, each on the same edits), paired: the
    i-th run of one side with the i-th of the other, on the edits both hold, pooled over runs. A side of
    one run (a fixed editor, say) is paired with every run of the other; its edits then count once per run,
    so the pooled pairs are not independent and the McNemar p-value is optimistic (test each run too)."""
    if len(first) == 1:
        first = list(first) * len(second)
    if len(second) == 1:
        second = list(second) * len(first)
    if len(first) != len(second) or not first:
        raise ValueError(
            f"pair runs one to one: got {len(first)} and {len(second)} runs (give both sides as many runs, "
            "in the same seed order, or one side a single run)"
        )
    x, y = [], []
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        keys = sorted(a.keys() & b.keys())
        if not keys:
            raise ValueError(
                f"run pair {i} shares no edits (same seed and target): run them on the same protocol"
            )
        x += [a[k] for k in keys]
        y += [b[k] for k in keys]
    return x, y
