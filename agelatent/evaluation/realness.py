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

__all__ = [
    "RealnessCalibration",
    "Readings",
    "calibrate_realness",
    "judged_transforms",
    "read_faces",
    "realness_summary",
    "transforms_from_config",
]


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


@dataclass(frozen=True)
class Readings:
    """The age network's readings of a batch of faces: clean and through each transform (CPU ``[N]``), and
    their identity embeddings (``[N, D]``, when asked for)."""

    clean: torch.Tensor
    transformed: dict[str, torch.Tensor]
    identity: torch.Tensor | None = None


@torch.no_grad()
def read_faces(
    world, images: torch.Tensor, transforms: Mapping[str, ImageTransform], seed: int, identity: bool = False
) -> Readings:
    """Read ``images`` in the world's chunks. Chunk ``i``'s noise is seeded ``seed + i``: the start and the
    final faces of the same edits get the same draws (their difference is the edit's, not the noise's)."""
    chunk = world.chunk_size or len(images)
    clean, out, embeddings = [], {name: [] for name in transforms}, []
    for i in range(0, len(images), chunk):
        part = images[i : i + chunk].to(world.device)
        if identity:
            scores = world.perception(part)
            clean.append(scores.ages_years.cpu())
            embeddings.append(scores.identity.cpu())
        else:
            clean.append(world.perception.ages(part).cpu())
        for name, t in transforms.items():
            out[name].append(t.reading(world.perception.ages, part, seed + i).cpu())
    return Readings(
        torch.cat(clean),
        {name: torch.cat(v) for name, v in out.items()},
        torch.cat(embeddings) if identity else None,
    )


def calibrate_realness(
    world, transforms: Mapping[str, ImageTransform], num_faces: int, first_seed: int, seed: int = 0
) -> RealnessCalibration:
    """Read ``num_faces`` unedited faces (seeds ``first_seed ..``) clean and through every transform."""
    if num_faces < 3:
        raise ValueError(
            f"the realness calibration needs >= 3 faces for a slope, got natural_faces={num_faces}"
        )
    with torch.no_grad():
        images = world.generate(world.sample_latents(list(range(first_seed, first_seed + num_faces))))
    faces = read_faces(world, images, transforms, seed)
    return RealnessCalibration(faces.clean, faces.transformed)


def judged_transforms(world, transforms: Mapping[str, ImageTransform]) -> list[str]:
    """The transforms ``kept`` is the minimum over: those of a kind the world's robust age reading does not
    average over (an editor steered by that reading is not judged by it). Refuses an empty choice."""
    robust = world.perception.robust_age
    excluded = {t.kind for t in robust.transforms} if robust is not None else set()
    judged = [name for name, t in transforms.items() if t.kind not in excluded]
    if not judged:
        raise ValueError(
            f"evaluator realness: every transform is of a kind the robust age reading uses ({sorted(excluded)}); "
            "give the judge another kind"
        )
    return judged


def _ci(samples: torch.Tensor, point: float) -> tuple[float, float, float]:
    """(point, 2.5 %, 97.5 %) of bootstrap ``samples`` (non-finite ones dropped)."""
    finite = samples[torch.isfinite(samples)]
    if len(finite) == 0:
        return point, float("nan"), float("nan")
    lo, hi = torch.quantile(finite.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return point, lo, hi


def realness_summary(
    world,
    result: EditResult,
    calibration: RealnessCalibration,
    transforms: Mapping[str, ImageTransform],
    bootstrap,
    seed: int = 0,
    start: Readings | None = None,
) -> dict[str, float]:
    """The judge's figures for one editor's edits: ``kept_<T>`` per transform, ``kept`` (their minimum over
    :func:`judged_transforms`), ``pixels_per_year`` and ``identity_per_year``, each with ``_low``/``_high``,
    and ``natural_slope_<T>``. ``start``: the start faces' readings when a caller already has them (every
    editor of an evaluation starts from the same faces)."""
    judged = judged_transforms(world, transforms)
    if start is None:
        start = read_faces(world, result.start_images, transforms, seed, identity=True)
    final = read_faces(world, result.final_images, transforms, seed, identity=True)
    n = len(result.targets)
    sign = torch.sign(result.targets.cpu() - start.clean)
    d_clean = (final.clean - start.clean) * sign
    idx = torch.randint(
        0, n, (bootstrap.resamples, n), generator=torch.Generator().manual_seed(bootstrap.seed)
    )
    out: dict[str, float] = {}
    samples, points = {}, {}
    for name in transforms:
        k = calibration.slope(name)
        d_t = (final.transformed[name] - start.transformed[name]) * sign
        points[name] = float(d_t.mean() / d_clean.mean()) / k
        samples[name] = d_t[idx].mean(1) / d_clean[idx].mean(1) / k
        out[f"kept_{name}"], out[f"kept_{name}_low"], out[f"kept_{name}_high"] = _ci(
            samples[name], points[name]
        )
        out[f"natural_slope_{name}"] = k
    out["kept"], out["kept_low"], out["kept_high"] = _ci(
        torch.stack([samples[name] for name in judged]).min(0).values, min(points[name] for name in judged)
    )
    requested = (result.targets.cpu() - start.clean).abs()
    pixels = ((result.final_images - result.start_images).abs() * 127.5).flatten(1).mean(1).cpu()
    moved = (final.identity - start.identity).norm(dim=1)
    for key, change in (("pixels_per_year", pixels), ("identity_per_year", moved)):
        point = float(change.mean() / requested.mean())
        out[key], out[f"{key}_low"], out[f"{key}_high"] = _ci(
            change[idx].mean(1) / requested[idx].mean(1), point
        )
    return out
