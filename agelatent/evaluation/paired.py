"""Two editors on the same edits: did one succeed more often, or only by chance?

Both editors ran the same protocol (the same start faces and targets), so their per-edit outcomes are paired.
:func:`mcnemar` is the exact McNemar test: only the *discordant* edits (one editor succeeded, the other did not)
carry information, and under "no difference" each discordant edit is a fair coin. :func:`paired_bootstrap` gives
a confidence interval for the difference in success rate by resampling edits (pairs kept together).
:func:`edit_outcomes` reads per-edit successes from an ``edits.csv`` that ``agelatent-eval`` wrote.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["McNemar", "edit_outcomes", "mcnemar", "paired_bootstrap"]


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


def edit_outcomes(
    path: str | Path, editor: str, success_window_years: float, hard_bound: float
) -> dict[tuple[int, float], tuple[bool, bool]]:
    """``{(seed, target): (success, robust success)}`` of ``editor``'s rows in an ``edits.csv``, judged as
    :func:`~agelatent.evaluation.metrics.edit_metrics` judges them: success = the clean reading within the window
    with identity kept; robust success = that, and the robust reading (``final_age``) within the window too.
    Without a robust reading the two readings are one and so are the two outcomes."""
    out = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["editor"] != editor:
                continue
            if "final_clean_age" not in row:
                raise ValueError(
                    f"{path} has no final_clean_age column (written before it existed): its success under a "
                    "robust reading cannot be told; rerun agelatent-eval"
                )
            # in float32, as the metrics judge them (the file holds the float32 values exactly)
            target, final, clean, similarity = (
                torch.tensor(float(row[k]), dtype=torch.float32)
                for k in ("target", "final_age", "final_clean_age", "similarity")
            )
            kept = bool(similarity >= hard_bound)
            success = kept and bool((clean - target).abs() <= success_window_years)
            robust = success and bool((final - target).abs() <= success_window_years)
            out[(int(row["seed"]), float(target))] = (success, robust)
    if not out:
        raise ValueError(f"{path} has no rows of editor {editor!r}")
    return out
