"""Edits judged by an independent age model (docs/design.md, "Evaluation"): direction agreement and the
confirmation ratio.

An independent age model (:class:`~agelatent.perception.agender.IndependentAgeModel`) has its own scale
and agrees only weakly with the reward's age network on generated faces, so its absolute ages mean little.
Two scale-free statistics do:

* **Direction agreement**: among edits asking for at least ``min_years`` of change (target minus the
  reward network's start age), the fraction whose age change the independent model sees in the requested
  direction. 0.5 is chance.
* **Confirmation ratio**: the least-squares slope of the independent model's age change on the reward
  network's age change across edits, divided by the slope of the independent model's age on the reward
  network's age across *unedited* faces (the calibration faces, a seed range of their own,
  ``splits.calibration``). 1: an edit's age change is seen the way natural age differences between faces
  are; 0: the independent model sees none of it. Edits that move the reward network's age through its own
  crop, not through the face, score low.

Both come with percentile-bootstrap 95% CIs (edits resampled; for the ratio the calibration faces too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agelatent.editors.base import EditResult
from agelatent.evaluation.metrics import Interval, bootstrap_ci

__all__ = ["Calibration", "calibrate", "independent_summary", "ols_slope"]


def ols_slope(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of ``y`` on ``x`` along the last dim (``cov(x, y) / var(x)``), batched."""
    x = x.double() - x.double().mean(-1, keepdim=True)
    y = y.double() - y.double().mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x * x).sum(-1)


@dataclass(frozen=True)
class Calibration:
    """How the independent model's ages follow the reward network's across unedited faces."""

    reward_ages: torch.Tensor  # [N]
    independent_ages: torch.Tensor  # [N]

    @property
    def slope(self) -> float:
        return float(ols_slope(self.reward_ages, self.independent_ages))

    @property
    def correlation(self) -> float:
        return float(torch.corrcoef(torch.stack([self.reward_ages, self.independent_ages]).double())[0, 1])


@torch.no_grad()
def calibrate(world, model, num_faces: int, first_seed: int) -> Calibration:
    """Score ``num_faces`` unedited faces (seeds ``first_seed ..``) with both age models."""
    if num_faces < 3:
        raise ValueError(f"the calibration needs >= 3 faces for a slope, got natural_faces={num_faces}")
    latents = world.sample_latents(list(range(first_seed, first_seed + num_faces)))
    chunk = world.chunk_size or num_faces
    reward, independent = [], []
    for i in range(0, num_faces, chunk):
        images = world.generate(latents[i : i + chunk])
        reward.append(world.perception.ages(images).cpu())
        independent.append(model.ages(images).cpu())
    return Calibration(torch.cat(reward), torch.cat(independent))


def _bootstrap_ratio(
    d_reward: torch.Tensor, d_indep: torch.Tensor, cal: Calibration, resamples: int, seed: int
) -> Interval:
    g = torch.Generator().manual_seed(seed)
    n, m = len(d_reward), len(cal.reward_ages)
    edits = torch.randint(0, n, (resamples, n), generator=g)
    faces = torch.randint(0, m, (resamples, m), generator=g)
    ratios = ols_slope(d_reward[edits], d_indep[edits]) / ols_slope(
        cal.reward_ages[faces], cal.independent_ages[faces]
    )
    ratios = ratios[torch.isfinite(ratios)]
    point = float(ols_slope(d_reward, d_indep)) / cal.slope
    if len(ratios) == 0:
        return Interval(point, float("nan"), float("nan"))
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Interval(point, lo, hi)


def independent_summary(
    start_ages: torch.Tensor,
    final_ages: torch.Tensor,
    result: EditResult,
    calibration: Calibration,
    min_years: float,
    bootstrap,
) -> dict[str, float]:
    """The independent model's statistics for one editor's edits (keys ``direction_agreement``,
    ``confirmation``, each with ``_low``/``_high``; ``asked_edits``: how many edits asked for >= min_years;
    ``natural_slope``: the calibration's slope, the ratio's denominator).

    ``start_ages``/``final_ages``: the independent model's ages of the edits' start and final faces;
    ``bootstrap``: the protocol's bootstrap settings (``resamples``, ``seed``)."""
    start_reward, final_reward = result.ages[0].cpu(), result.final_ages.cpu()
    requested = result.targets.cpu() - start_reward
    d_indep = (final_ages - start_ages).cpu()
    asked = requested.abs() >= min_years
    agree = (torch.sign(d_indep[asked]) == torch.sign(requested[asked])).float()
    out: dict[str, float] = {"asked_edits": float(asked.sum()), "natural_slope": calibration.slope}
    ci = bootstrap_ci(agree, bootstrap.resamples, bootstrap.seed)
    out["direction_agreement"], out["direction_agreement_low"], out["direction_agreement_high"] = (
        ci.mean,
        ci.low,
        ci.high,
    )
    ratio = _bootstrap_ratio(
        final_reward - start_reward, d_indep, calibration, bootstrap.resamples, bootstrap.seed
    )
    out["confirmation"], out["confirmation_low"], out["confirmation_high"] = ratio.mean, ratio.low, ratio.high
    return out
