"""The latent that reproduces a photo's aligned face: optimisation through the differentiable world.

The world's generator is inverted in its own latent space, the one its editors move in: Z for the embedded
DCGAN; for StyleGAN2 the space ``generator.latent_space`` names (``z``, ``w`` or ``w+``, one w per synthesis
layer: the most faithful reconstructions, and edits then move all layers). From ``restarts`` starting
latents (the generator's prior, seeds ``seed ..``), Adam minimises per restart

    pixel_weight * mean squared error of the images (on the generator's [-1, 1] scale)
    + identity_weight * (1 - identity similarity to the photo's face, as the world's perception sees both)
    + prior_weight * typicality

and keeps the restart with the lowest final loss. Typicality keeps the latent where the prior puts its
samples (:class:`~agelatent.generators.TypicalSet`): ``(|z| / sqrt(d) - 1)^2`` in Z, where |z| concentrates
at sqrt(d); in W the same with the distance from ``w_avg`` and the mean distance of mapped samples, per
layer in W+. The identity term needs the differentiable perception (``perception.runtime=torch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Inversion", "InversionSettings", "invert"]


@dataclass(frozen=True, kw_only=True)
class InversionSettings:
    steps: int
    restarts: int
    lr: float
    pixel_weight: float
    identity_weight: float
    prior_weight: float
    seed: int

    def __post_init__(self) -> None:
        for name in ("steps", "restarts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"inversion.{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"inversion.lr must be a finite number > 0, got {self.lr!r}")
        for name in ("pixel_weight", "identity_weight", "prior_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"inversion.{name} must be a finite number >= 0, got {value!r}")
        if self.pixel_weight == self.identity_weight == 0:
            raise ValueError("inversion: pixel_weight and identity_weight are both 0: nothing to match")


@dataclass(frozen=True)
class Inversion:
    latent: torch.Tensor  # [d] the best restart's latent
    image: torch.Tensor  # [3, H, W] its image, generator range [-1, 1]
    losses: torch.Tensor  # [steps + 1, restarts] total loss per step (the last row: after the final step)
    best: int  # index of the kept restart


def invert(
    world,
    target: torch.Tensor,
    settings: InversionSettings,
    progress: Callable[[int], None] | None = None,
) -> Inversion:
    """``target [3, H, W]`` in [-1, 1] at the generator's resolution -> :class:`Inversion`.
    ``progress(step)`` is called after every step (a progress bar)."""
    target = target.to(world.device, torch.float32)[None]
    perception = world.perception
    with torch.no_grad():
        target_id = perception(target).identity if settings.identity_weight else None
    z = world.sample_latents(range(settings.seed, settings.seed + settings.restarts)).clone()
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=settings.lr)
    typical = world.typical_set() if settings.prior_weight else None

    def losses() -> torch.Tensor:
        images = world.generator(z)
        loss = settings.pixel_weight * (images - target).pow(2).flatten(1).mean(1)
        if target_id is not None:
            similarity = world.identity_similarity(perception(images).identity, target_id)
            loss = loss + settings.identity_weight * (1 - similarity)
        if typical is not None:
            loss = loss + settings.prior_weight * typical.penalty(z)
        return loss

    history = []
    for step in range(settings.steps):
        loss = losses()
        history.append(loss.detach())
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        if progress is not None:
            progress(step + 1)
    with torch.no_grad():
        final = losses()
        history.append(final)
        best = int(final.argmin())
        image = world.generator(z[best : best + 1])[0]
    return Inversion(latent=z[best].detach(), image=image, losses=torch.stack(history).cpu(), best=best)
