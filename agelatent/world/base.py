"""A world: a frozen generator plus the frozen face networks that score its images, behind one batched call.

Everything that touches the frozen networks goes through :meth:`World.score`, so there is one place to
optimise and to measure. Both halves are Hydra groups (``generator/`` and ``perception/``) and can be
swapped independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agelatent.generators.base import Generator, check_generator
from agelatent.generators.latents import TypicalSet
from agelatent.perception.base import FaceScores, Perception, check_perception


@dataclass(frozen=True)
class Scores(FaceScores):
    """Scores of generated faces, with the images they were computed on."""

    images: torch.Tensor  # [B, 3, H, W] generator output in [-1, 1]
    #: the age network's clean reading [B]; ``ages_years`` is the robust one (``perception.robust_age``),
    #: which is the clean one when no robust reading is configured
    clean_ages_years: torch.Tensor | None = None

    @property
    def clean_ages(self) -> torch.Tensor:
        """The clean reading ``[B]`` (``ages_years`` when the world has no robust reading)."""
        return self.ages_years if self.clean_ages_years is None else self.clean_ages_years


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: frozen networks stay frozen even inside a training loop."""
    module.eval()
    module.requires_grad_(False)
    return module


class World(nn.Module):
    """Generator + perception on one device.

    ``score(latents)`` runs under ``torch.no_grad()`` unless ``with_grad=True`` (for white-box editors and
    gradient-based age directions): the networks stay frozen either way, but gradients then flow to the
    latents.

    ``generator`` and ``perception`` are checked against their contracts (:data:`~agelatent.generators.GENERATOR_HOOKS`,
    :data:`~agelatent.perception.base.PERCEPTION_HOOKS`): a missing hook fails here, naming it.

    ``chunk_size``: batches larger than this are scored in chunks (results concatenated, gradients
    included): on a small CPU a large batch stops fitting in cache and scores more slowly per face (``make
    bench`` measures it by batch size), so callers can hand over any batch. ``None``: no chunking (GPUs).
    """

    def __init__(
        self,
        generator: Generator,
        perception: Perception,
        device: str | torch.device = "cpu",
        chunk_size: int | None = 32,
    ) -> None:
        super().__init__()
        check_generator(generator)
        check_perception(perception)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or null (no chunking), got {chunk_size}")
        self.generator = freeze(generator)
        self.perception = freeze(perception)
        self.chunk_size = chunk_size
        self.to(device)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def latent_dim(self) -> int:
        """Length of a latent: the editors' and the policy's space."""
        return self.generator.latent_dim

    @property
    def same_person_similarity(self) -> float:
        """The perception's identity similarity at or above which two faces are the same person."""
        return self.perception.same_person_similarity

    def train(self, mode: bool = True) -> World:
        # Lightning calls .train() on every submodule of a LightningModule; a frozen world ignores it.
        return super().train(False)

    def sample_latents(self, seeds) -> torch.Tensor:
        """One latent per seed from the generator's prior, independent of batch composition."""
        return self.generator.sample_latents(seeds, self.device)

    @property
    def latent_space(self) -> str:
        """The space latents live in (the generator's ``latent_space``: z, or StyleGAN2's w / w+)."""
        return self.generator.latent_space

    def typical_set(self) -> TypicalSet:
        """Where the generator's prior puts latents (:class:`~agelatent.generators.TypicalSet`)."""
        return self.generator.typical_set()

    def _chunks(self, latents: torch.Tensor) -> list[torch.Tensor]:
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents: expected [B, {self.latent_dim}], got {tuple(latents.shape)}")
        latents = latents.to(self.device)
        if self.chunk_size is None or latents.shape[0] <= self.chunk_size:
            return [latents]
        return list(latents.split(self.chunk_size))

    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] (no gradients unless the caller enables them)."""
        return torch.cat([self.generator(c) for c in self._chunks(latents)])

    def score(self, latents: torch.Tensor, *, with_grad: bool = False) -> Scores:
        """Latents ``[B, latent_dim]`` -> images and their ages, identity embeddings and gender. With a
        robust age reading (``perception.robust_age``) ``ages_years`` is that reading and
        ``clean_ages_years`` the age network's clean one: the reward, the walk's direction and the env's
        termination all see the robust reading, and success needs both (see ``LatentAgeEnv``)."""
        robust = self.perception.robust_age is not None
        parts = []
        with torch.set_grad_enabled(with_grad):
            for chunk in self._chunks(latents):
                images = self.generator(chunk)
                faces = self.perception(images)
                parts.append((images, faces, self.perception.robust_ages(images) if robust else None))
        cat = (lambda xs: xs[0]) if len(parts) == 1 else torch.cat
        clean = cat([f.ages_years for _, f, _ in parts])
        return Scores(
            images=cat([im for im, _, _ in parts]),
            ages_years=cat([r for _, _, r in parts]) if robust else clean,
            identity=cat([f.identity for _, f, _ in parts]),
            p_male=cat([f.p_male for _, f, _ in parts]),
            clean_ages_years=clean if robust else None,
        )

    def ages(self, latents: torch.Tensor, *, with_grad: bool = False) -> torch.Tensor:
        """Latents ``[B, latent_dim]`` -> ages in years ``[B]``, without the identity network: the robust
        reading when the perception has one (the reading :meth:`score` calls ``ages_years``)."""
        with torch.set_grad_enabled(with_grad):
            return torch.cat([self.perception.robust_ages(self.generator(c)) for c in self._chunks(latents)])

    def identity_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.perception.identity_similarity(a, b)
