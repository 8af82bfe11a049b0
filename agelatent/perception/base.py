"""What every perception is: the scores it returns, the interface it offers, and its NaN/Inf guard.

A perception is a set of frozen face networks: images in [-1, 1] -> ages, identity embeddings, gender. Worlds
(:mod:`agelatent.world`) and everything above them depend on this module, never on one perception's module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

__all__ = ["FaceScores", "NonFiniteScoresError", "Perception", "check_finite"]


@dataclass(frozen=True)
class FaceScores:
    """What the perception networks say about a batch of face images (all tensors on the world's device)."""

    ages_years: torch.Tensor  # [B] expected age in years
    identity: torch.Tensor  # [B, D] identity embedding (compare with Perception.identity_similarity)
    p_male: torch.Tensor  # [B] probability the face is male


class Perception(Protocol):
    """Frozen face networks: images in [-1, 1] -> ages, identity embeddings, gender."""

    #: identity similarity at or above which two faces count as the same person
    same_person_similarity: float
    #: whether gradients reach the images (``runtime=torch``: yes; ``runtime=onnxruntime``: no)
    differentiable: bool
    #: (lowest, highest) age in years the age network can predict; a class attribute, so configs can be
    #: checked against it before any model is loaded
    age_range: ClassVar[tuple[float, float]]
    #: length of the identity embedding (``FaceScores.identity.shape[1]``)
    identity_dim: ClassVar[int]

    def __call__(self, images: torch.Tensor) -> FaceScores: ...

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages only (skips the identity network): the cheap path for probes and age-only baselines."""
        ...

    def identity_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


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
