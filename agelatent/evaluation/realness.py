"""Is an edit's age change visible? Realness and visible change, judged from outside the reward.

The reward's age network can be moved by latent changes a person does not see. Image transforms that keep
what a person sees (:mod:`agelatent.perception.transforms`: mild blur, down- and up-sampling, pixel noise)
remove most of such a change, while they keep most of the *natural* age difference between two unedited
faces. So, for each transform T:

* ``k_T``: the least-squares slope of the T-reading (the same age network on the transformed image) on the
  clean reading, across unedited faces of the ``splits.calibration`` range: how much of a natural age
  difference survives T;
* ``kept_T`` = mean(ΔT-age · s) / mean(Δclean-age · s) / k_T over an editor's edits, with s the sign of the
  requested change: the fraction of the editor's age change that survives T, relative to natural
  differences. 1: as real as the differences between unedited faces; 0: all of it lives in what T removes.

``kept`` is the smallest ``kept_T`` over the judge's transforms whose kind the world's robust age reading
(``perception.robust_age``) does not use: an editor steered by a reading smoothed over a transform is not
judged by that transform. Beside it, two visible-change figures:
``pixels_per_year``, the mean absolute pixel change (0..255) per requested year, and ``identity_per_year``,
the identity embedding's change per requested year. An editor whose success rests on invisible changes shows
low ``kept`` and few pixels per year. All come with percentile-bootstrap 95% CIs over the edits (the
calibration slopes held fixed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from agelatent.editors.base import EditResult
from agelatent.evaluation.independent import ols_slope
from agelatent.perception.transforms import ImageTransform

__all__ = ["RealnessCalibration", "calibrate_realness", "realness_summary", "transforms_from_config"]


def transforms_from_config(spec: Mapping) -> dict[str, ImageTransform]:
    """``evaluator.<name>.transforms`` (name -> kind, strength, draws) -> checked :class:`ImageTransform`s."""
    if not spec:
        raise ValueError("evaluator realness: transforms is empty; give at least one (kind, strength)")
    out = {}
    for name, t in spec.items():
        try:
            out[name] = ImageTransform(**dict(t))
        except (TypeError, ValueError) as err:
            raise ValueError(f"evaluator realness: transforms.{name}: {err}") from None
    return out


@dataclass(frozen=True)
class RealnessCalibration:
    """The clean and transformed readings of unedited faces, and the slopes ``k_T`` they give."""

    clean: torch.Tensor  # [N]
    transformed: dict[str, torch.Tensor]  # name -> [N]

    def slope(self, name: str) -> float:
        return float(ols_slope(self.clean, self.transformed[name]))

    def correlation(self, name: str) -> float:
        return float(torch.corrcoef(torch.stack([self.clean, self.transformed[name]]).double())[0, 1])


def _readings(world, images: torch.Tensor, transforms: Mapping[str, ImageTransform], seed: int):
    chunk = world.chunk_size or len(images)
    clean, out = [], {name: [] for name in transforms}
    for i in range(0, len(images), chunk):
        part = images[i : i + chunk].to(world.device)
        clean.append(world.perception.ages(part).cpu())
        for name, t in transforms.items():
            out[name].append(t.reading(world.perception.ages, part, seed + i).cpu())
    return torch.cat(clean), {name: torch.cat(v) for name, v in out.items()}


@torch.no_grad()
def calibrate_realness(
    world, transforms: Mapping[str, ImageTransform], num_faces: int, first_seed: int, seed: int = 0
) -> RealnessCalibration:
    """Read ``num_faces`` unedited faces (seeds ``first_seed ..``) clean and through every transform."""
    if num_faces < 3:
        raise ValueError(
            f"the realness calibration needs >= 3 faces for a slope, got natural_faces={num_faces}"
        )
    images = world.generate(world.sample_latents(list(range(first_seed, first_seed + num_faces))))
    clean, transformed = _readings(world, images, transforms, seed)
    return RealnessCalibration(clean, transformed)


def _ci(values: torch.Tensor, resamples: int, seed: int, point: float) -> tuple[float, float, float]:
    finite = values[torch.isfinite(values)]
    if len(finite) == 0:
        return point, float("nan"), float("nan")
    lo, hi = torch.quantile(finite.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return point, lo, hi


@torch.no_grad()
def realness_summary(
    world,
    result: EditResult,
    calibration: RealnessCalibration,
    transforms: Mapping[str, ImageTransform],
    bootstrap,
    seed: int = 0,
) -> dict[str, float]:
    """The judge's figures for one editor's edits: ``kept_<T>`` per transform, ``kept`` (their minimum over
    the kinds the robust reading does not use),
    ``pixels_per_year`` and ``identity_per_year``, each with ``_low``/``_high``, and ``natural_slope_<T>``."""
    images = torch.cat([result.start_images, result.final_images])
    clean, transformed = _readings(world, images, transforms, seed)
    n = len(result.targets)
    sign = torch.sign(result.targets.cpu() - clean[:n])
    d_clean = (clean[n:] - clean[:n]) * sign
    g = torch.Generator().manual_seed(bootstrap.seed)
    idx = torch.randint(0, n, (bootstrap.resamples, n), generator=g)
    out: dict[str, float] = {}
    robust = world.perception.robust_age
    excluded = {t.kind for t in robust.transforms} if robust is not None else set()
    kept_samples, kept_points = [], []
    for name in transforms:
        k = calibration.slope(name)
        d_t = (transformed[name][n:] - transformed[name][:n]) * sign
        point = float(d_t.mean() / d_clean.mean()) / k
        samples = d_t[idx].mean(1) / d_clean[idx].mean(1) / k
        out[f"kept_{name}"], out[f"kept_{name}_low"], out[f"kept_{name}_high"] = _ci(
            samples, bootstrap.resamples, bootstrap.seed, point
        )
        out[f"natural_slope_{name}"] = k
        if transforms[name].kind not in excluded:
            kept_samples.append(samples)
            kept_points.append(point)
    if not kept_points:
        raise ValueError(
            f"evaluator realness: every transform is of a kind the robust age reading uses ({sorted(excluded)}); "
            "give the judge another kind"
        )
    out["kept"], out["kept_low"], out["kept_high"] = _ci(
        torch.stack(kept_samples).min(0).values, bootstrap.resamples, bootstrap.seed, min(kept_points)
    )
    requested = (result.targets.cpu() - clean[:n]).abs()
    pixels = ((result.final_images - result.start_images).abs() * 127.5).flatten(1).mean(1).cpu()
    scores = world.perception(images.to(world.device))
    moved = (scores.identity[n:] - scores.identity[:n]).norm(dim=1).cpu()
    for key, change in (("pixels_per_year", pixels), ("identity_per_year", moved)):
        point = float(change.mean() / requested.mean())
        out[key], out[f"{key}_low"], out[f"{key}_high"] = _ci(
            change[idx].mean(1) / requested[idx].mean(1), bootstrap.resamples, bootstrap.seed, point
        )
    return out
