"""Per-edit metrics and their bootstrap 95% confidence intervals (docs/design.md, "Evaluation").

Per edit: final |age - target|, success (within ``success_window_years`` — ``protocol.success_window_years``,
not the env's episode-ending ``success_tolerance_years`` — of the target with identity kept at the hard
bound), identity similarity to the start face and whether it stays at or above the hard bound, gender
flip (P(male) crosses 0.5), latent typicality (|ρ - 1|, ρ the distance from the typical set in radii), steps; per batch: world calls and seconds
per edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agelatent.editors.base import EditResult

__all__ = ["METRICS", "SUMMARY_KEYS", "bootstrap_ci", "edit_metrics", "summarise"]

#: metric -> (description, higher is better)
METRICS = {
    "success_rate": ("|clean age - target| <= success_window_years and identity >= hard bound", True),
    "robust_success_rate": (
        "success, and the robust age reading within success_window_years too (only with a robust reading)",
        True,
    ),
    "age_error": ("final |age - target| in years (the robust reading when there is one)", False),
    "similarity": ("final identity similarity to the start face", True),
    "bound_rate": ("fraction of edits whose identity stays >= the hard bound", True),
    "gender_flip_rate": ("fraction of edits whose P(male) crosses 0.5", False),
    "typicality": (
        "|ρ - 1| of the final latent, ρ its distance from the typical set's centre in radii",
        False,
    ),
    "steps": ("steps taken", False),
}
#: keys of :func:`summarise`'s result that are a mean over edits (what a sweeper may optimise)
SUMMARY_KEYS = (*METRICS, "world_calls_per_edit", "seconds_per_edit")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def edit_metrics(
    result: EditResult, hard_bound: float, success_window_years: float
) -> dict[str, torch.Tensor]:
    """Per-edit values ``[B]`` (float) for every metric in :data:`METRICS` (``robust_success_rate`` only when
    the world had a robust age reading: ``result.clean_ages`` is then the clean reading)."""
    err = (result.final_ages - result.targets).abs()
    kept = result.final_similarity >= hard_bound
    clean_ok = err <= success_window_years
    robust = {}
    if result.clean_ages is not None:
        robust_ok = clean_ok
        clean_ok = (result.clean_ages[-1] - result.targets).abs() <= success_window_years
        robust = {"robust_success_rate": (robust_ok & clean_ok & kept).float()}
    return {
        "success_rate": (clean_ok & kept).float(),
        **robust,
        "age_error": err,
        "similarity": result.final_similarity,
        "bound_rate": kept.float(),
        "gender_flip_rate": ((result.p_male[0] >= 0.5) != (result.p_male[-1] >= 0.5)).float(),
        "typicality": result.typicality,
        "steps": result.steps.float(),
    }


def bootstrap_ci(values: torch.Tensor, num_resamples: int, seed: int, level: float = 0.95) -> Interval:
    """Percentile bootstrap of the mean (resampling edits with replacement)."""
    v = values.detach().double().cpu().flatten()
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(v), (num_resamples, len(v)), generator=g)
    means = v[idx].mean(dim=1)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return Interval(float(v.mean()), lo, hi)


def summarise(result: EditResult, hard_bound: float, protocol) -> dict[str, float]:
    """Mean and 95% CI of every metric (keys ``<metric>``, ``<metric>_low``, ``<metric>_high``), plus
    ``edits``, ``world_calls_per_edit`` and ``seconds_per_edit``. ``protocol``: the ``protocol`` config
    group (success window, bootstrap resamples and seed)."""
    out: dict[str, float] = {"edits": float(len(result.targets))}
    for name, values in edit_metrics(result, hard_bound, protocol.success_window_years).items():
        ci = bootstrap_ci(values, protocol.bootstrap.resamples, protocol.bootstrap.seed)
        out[name], out[f"{name}_low"], out[f"{name}_high"] = ci.mean, ci.low, ci.high
    n = max(len(result.targets), 1)
    out["world_calls_per_edit"] = result.world_calls / n
    out["seconds_per_edit"] = result.seconds / n
    return out
