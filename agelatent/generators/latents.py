"""Latent priors shared by all generators."""

from __future__ import annotations

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
