"""Image transforms that keep what a person sees of a face and remove what only a network's blind spots
use: mild blur, down- and up-sampling, small pixel noise. Batched, differentiable, on generator output
(``[B, 3, H, W]`` in [-1, 1]).

Natural age differences between faces survive them (the age network reads most of the difference between two
unedited faces after them), while an edit that lives in the network's blind spots does not: that contrast is
what :mod:`agelatent.evaluation.realness` measures. Each transform is an :class:`ImageTransform` (a kind and a
strength, configured in ``conf/evaluator/realness.yaml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TRANSFORM_KINDS", "ImageTransform", "gaussian_blur", "pixel_noise", "resample"]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels (kernel radius ceil(3 sigma),
    reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def resample(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Down-sample by ``factor`` (area average), then back up to the original size (bilinear)."""
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def pixel_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (in the images' [-1, 1] units; 0.05 is about 6
    gray levels), drawn on the CPU from ``generator`` so a seed gives the same noise on any device."""
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return images + sigma * noise.to(images.device)


#: transform kind -> what its ``strength`` is
TRANSFORM_KINDS = {
    "blur": "Gaussian blur, standard deviation in pixels",
    "resample": "down-sampling factor (area), then back up (bilinear)",
    "noise": "Gaussian pixel noise, standard deviation in [-1, 1] image units",
}


@dataclass(frozen=True)
class ImageTransform:
    """One transform of :data:`TRANSFORM_KINDS` at a ``strength``; ``draws`` random draws (noise) are
    averaged by whoever reads through it."""

    kind: str
    strength: float
    draws: int = 1

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ValueError(f"transform kind must be one of {list(TRANSFORM_KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise ValueError(
                f"transform {self.kind}: strength must be a finite number > 0, got {self.strength!r}"
            )
        if self.kind == "resample" and self.strength <= 1:
            raise ValueError(
                f"transform resample: strength is a down-sampling factor > 1, got {self.strength!r}"
            )
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ValueError(f"transform {self.kind}: draws must be an integer >= 1, got {self.draws!r}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.kind == "blur":
            return gaussian_blur(images, self.strength)
        if self.kind == "resample":
            return resample(images, self.strength)
        return pixel_noise(images, self.strength, generator)

    def reading(self, read, images: torch.Tensor, seed: int) -> torch.Tensor:
        """``read`` (images -> ``[B]``) through the transform, averaged over ``draws`` (seeded)."""
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([read(self(images, generator)) for _ in range(self.draws)]).mean(0)
