"""What every generator is: the hooks the framework calls, with the standard-normal defaults.

A generator maps latents ``[B, latent_dim]`` to face images ``[B, 3, resolution, resolution]`` in [-1, 1].
Everything above it -- the world, the MDP, the editors, photo inversion -- reaches it only through the
hooks in :data:`GENERATOR_HOOKS`. Subclass :class:`Generator` and set ``latent_dim`` and ``resolution`` in
``__init__`` and write ``forward``; the prior hooks default to a standard normal ``N(0, I)`` in a space
called ``z``. A generator with another prior (StyleGAN2's mapped W) overrides ``sample_latents`` and
``typical_set`` together. :func:`check_generator` (run when a world is built) names any hook an object lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from agelatent.contracts import check_hooks
from agelatent.generators.latents import TypicalSet, sample_latents

__all__ = ["GENERATOR_HOOKS", "Generator", "check_generator"]

#: the attributes and methods the framework uses, each with what it is for
GENERATOR_HOOKS: dict[str, str] = {
    "latent_dim": "int: length of a latent (the editors' and the policy's space)",
    "resolution": "int: side of the square images it returns",
    "latent_space": "str: the name of the space latents live in (z, w, w+): saved with inverted photos",
    "photo_alignment": "str: how agelatent-edit crops a photo's face for it (template | ffhq)",
    "forward": "latents [B, latent_dim] -> images [B, 3, resolution, resolution] in [-1, 1]",
    "sample_latents": "(seeds, device) -> [len(seeds), latent_dim]: one latent per seed from its prior",
    "typical_set": "() -> TypicalSet: where its prior puts latents (the env's clamp, observation and prior term)",
    "first_layer_map": "() -> [outputs, latent_dim]: the linear map from a latent to its first layer (semantic directions)",
}


class Generator(nn.Module):
    """Base class of generators; see the module docstring for what a subclass provides."""

    latent_dim: int
    resolution: int
    #: the space its latents live in; a generator with one prior keeps the default
    latent_space: str = "z"
    #: how agelatent-edit crops a photo's face for it (:data:`agelatent.photos.faces.ALIGNMENTS`): ``template``
    #: measures the crop from its own samples, ``ffhq`` follows the FFHQ dataset's recipe
    photo_alignment: ClassVar[str] = "template"

    def sample_latents(
        self, seeds: Iterable[int] | torch.Tensor, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """One latent per seed from the prior, independent of batch composition and device (default: a
        standard normal drawn by one CPU generator per seed)."""
        seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
        return sample_latents(seeds, self.latent_dim, device)

    def first_layer_map(self) -> torch.Tensor:
        """``[outputs, latent_dim]``: the linear map from a latent to the generator's first layer's response,
        for closed-form semantic directions (:func:`agelatent.generators.sefa.semantic_directions`). A
        generator whose first layer is not linear in the latent raises NotImplementedError (the default)."""
        raise NotImplementedError(f"{type(self).__name__} has no first layer linear in its latents")

    def typical_set(self) -> TypicalSet:
        """Where :meth:`sample_latents` puts latents (default: the standard normal's shell of radius sqrt(d))."""
        device = next(iter(self.parameters()), torch.zeros(())).device
        return TypicalSet.standard_normal(self.latent_dim, device)


def check_generator(generator: object) -> None:
    """Raise ``TypeError`` naming every hook of :data:`GENERATOR_HOOKS` that ``generator`` lacks, and
    ``ValueError`` for a size that is not a positive integer."""
    check_hooks(
        generator,
        GENERATOR_HOOKS,
        "generator",
        "agelatent.generators.Generator",
        "the standard-normal prior hooks",
    )
    for name in ("latent_dim", "resolution"):
        value = getattr(generator, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"generator {type(generator).__name__}.{name} must be a positive int, got {value!r}"
            )
