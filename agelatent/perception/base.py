"""What every perception is: the scores it returns, the interface it offers, and its NaN/Inf guard.

A perception is a set of frozen face networks: images in [-1, 1] -> ages, identity embeddings, gender. Worlds
(:mod:`agelatent.world`) and everything above them depend on this module, never on one perception's module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from agelatent.contracts import check_hooks

__all__ = [
    "PERCEPTION_HOOKS",
    "FaceScores",
    "NonFiniteScoresError",
    "Perception",
    "check_finite",
    "check_perception",
]


@dataclass(frozen=True)
class FaceScores:
    """What the perception networks say about a batch of face images (all tensors on the world's device)."""

    ages_years: torch.Tensor  # [B] expected age in years
    identity: torch.Tensor  # [B, D] identity embedding (compare with Perception.identity_similarity)
    p_male: torch.Tensor  # [B] probability the face is male


class Perception(nn.Module):
    """Base class of perceptions: frozen face networks, images in [-1, 1] -> ages, identity embeddings,
    gender. A subclass sets the class attributes ``age_range`` and ``identity_dim``, sets
    ``same_person_similarity`` and writes ``forward`` and ``ages``; the other hooks of
    :data:`PERCEPTION_HOOKS` have defaults (cosine similarity, differentiable, no augmentation, no landmarks).
    """

    #: (lowest, highest) age in years the age network can predict; a class attribute, so configs can be
    #: checked against it before any model is loaded
    age_range: ClassVar[tuple[float, float]]
    #: length of the identity embedding (``FaceScores.identity.shape[1]``)
    identity_dim: ClassVar[int]
    #: identity similarity at or above which two faces count as the same person
    same_person_similarity: float
    #: the robust age reading (``perception.robust_age``, :class:`agelatent.perception.robust.RobustReading`);
    #: None: the robust reading is the clean one
    robust_age = None

    @property
    def differentiable(self) -> bool:
        """Whether gradients reach the images (``runtime=torch``: yes; ``runtime=onnxruntime``: no)."""
        return True

    def forward(self, images: torch.Tensor) -> FaceScores:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(images) -> FaceScores")

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages only (skips the identity network): the cheap path for probes and age-only baselines."""
        raise NotImplementedError(f"{type(self).__name__} must implement ages(images) -> [B] years")

    def robust_ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages ``[B]`` read robustly: the age network's mean over :attr:`robust_age`'s transforms (the clean
        :meth:`ages` when none is configured); differentiable wherever :meth:`ages` is."""
        return self.ages(images) if self.robust_age is None else self.robust_age(self.ages, images)

    @staticmethod
    def identity_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity of identity embeddings, broadcasting over leading dims (default: cosine)."""
        return torch.nn.functional.cosine_similarity(a, b, dim=-1)

    @contextlib.contextmanager
    def augmentation(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, the reward's readings use the perception's training-time augmentation, if it has
        one (``agelatent-train`` only; default: none)."""
        yield

    def five_point_landmarks(self, images: torch.Tensor) -> torch.Tensor | None:
        """``[B, 5, 2]`` five-point landmarks (dlib's order) in the images' pixels, as the perception aligns
        them, or ``None`` when it does not locate faces (agelatent-edit then detects them with dlib)."""
        return None


#: the attributes and methods the framework uses, each with what it is for
PERCEPTION_HOOKS: dict[str, str] = {
    "age_range": "class attribute (lo, hi): ages the age network can predict (targets are checked against it)",
    "identity_dim": "class attribute int: length of the identity embedding",
    "same_person_similarity": "float: identity similarity at or above which two faces are the same person",
    "differentiable": "bool: whether gradients reach the images (white-box editors need it)",
    "forward": "images [B, 3, H, W] in [-1, 1] -> FaceScores (ages, identity, P(male))",
    "ages": "images -> ages [B] in years, without the identity network",
    "robust_ages": "images -> ages [B] read through the robust_age transforms (the clean ages without them)",
    "identity_similarity": "(a, b) embeddings -> similarity, broadcasting",
    "augmentation": "context manager: training-time augmentation of the reward's readings (may do nothing)",
    "five_point_landmarks": "images -> [B, 5, 2] landmarks in image pixels, or None",
}


def check_perception(perception: object) -> None:
    """Raise ``TypeError`` naming every hook of :data:`PERCEPTION_HOOKS` that ``perception`` lacks."""
    check_hooks(
        perception, PERCEPTION_HOOKS, "perception", "agelatent.perception.base.Perception", "the defaults"
    )
    lo, hi = perception.age_range
    if not lo < hi:
        raise ValueError(
            f"perception {type(perception).__name__}.age_range must be (lo, hi) with lo < hi, got {(lo, hi)}"
        )


class NonFiniteScoresError(FloatingPointError):
    """A perception network produced NaN or Inf: the input images (or the weights) are broken."""


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: whether every value of each batch row is finite (works for empty batches too)."""
    finite = torch.isfinite(values)
    return finite.flatten(1).all(-1) if finite.ndim > 1 else finite


def check_finite(outputs: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteScoresError` if any of ``outputs`` (``[B, ...]`` each) holds NaN or Inf.

    ``outputs`` maps what each tensor is ("ages", "identity embeddings", ...) to the tensor; ``source`` names
    the network(s) that produced them. The message names, per output, the batch rows (at most ten) that are
    not finite. One device-to-host flag for all outputs together, the rows only on failure.
    """
    rows = {name: _finite_rows(values) for name, values in outputs.items()}
    if not rows or bool(torch.stack([r.all() for r in rows.values()]).all()):
        return
    bad = [
        f"{name} for batch rows {(~ok).nonzero().flatten().tolist()[:10]}"
        for name, ok in rows.items()
        if not bool(ok.all())
    ]
    raise NonFiniteScoresError(
        f"{source} produced non-finite {', '.join(bad)}; check the generator output for NaN/Inf (e.g. latents "
        "that overflowed) and the model files (`agelatent-models verify` for the model store's copies)"
    )
