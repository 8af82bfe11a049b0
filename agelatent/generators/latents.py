"""Latent priors shared by all generators."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def sample_latents(
    seeds: list[int] | torch.Tensor, latent_dim: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One standard-normal latent per seed, independent of batch composition and device.

    Each seed gets its own CPU generator, so face ``seed=7`` is the same face whether it is drawn alone
    or inside a batch, on CPU or GPU.
    """
    seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    rows = [torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows).to(device) if rows else torch.empty(0, latent_dim, device=device)


@dataclass(frozen=True)
class TypicalSet:
    """Where a generator's prior puts its latents: each ``block``-long slice of a latent lies at about
    ``radius`` from the matching slice of ``centre``.

    For a standard normal of dimension d: centre 0, one block, radius sqrt(d) (|z| concentrates there).
    For StyleGAN2's W: centre ``w_avg``, radius the mean distance of its mapped (truncated) samples from it;
    W+ repeats that per layer. :meth:`penalty` is the inversion's typicality term.
    """

    centre: torch.Tensor  # [latent_dim]
    block: int  # latent_dim is a whole number of blocks
    radius: float

    @classmethod
    def standard_normal(cls, latent_dim: int, device: torch.device | str = "cpu") -> TypicalSet:
        return cls(torch.zeros(latent_dim, device=device), latent_dim, math.sqrt(latent_dim))

    def relative_radii(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim]`` -> ``[B, blocks]``: each block's distance from its centre in units of
        ``radius`` (1 on the typical set)."""
        return self._offsets(latents).norm(dim=-1) / self.radius

    def penalty(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim]`` -> ``[B]``: the mean over blocks of ``(|x_b - c_b| / radius - 1)^2``
        (0 on the typical set; grows off it on either side)."""
        return (self.relative_radii(latents) - 1).pow(2).mean(-1)

    def clamp(self, latents: torch.Tensor, tolerance: float) -> torch.Tensor:
        """Move each block of ``latents`` radially (about its centre) to within ``radius * (1 ± tolerance)``."""
        offsets = self._offsets(latents)
        norm = offsets.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        target = norm.clamp(self.radius * (1 - tolerance), self.radius * (1 + tolerance))
        return (self.centre.to(latents.device) + (offsets * (target / norm)).reshape(latents.shape)).to(
            latents.dtype
        )

    def _offsets(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.centre.to(latents.device)).reshape(len(latents), -1, self.block)
