"""Worlds: a frozen generator + frozen face perception behind one batched ``score`` call."""

from __future__ import annotations

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from agelatent.world.base import FaceScores, Scores, World, freeze

__all__ = ["FaceScores", "Scores", "World", "build_world", "freeze", "perception_class", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else CPU; anything else must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name!r} requested but CUDA is not available; use device=cpu or device=auto"
        )
    return device


def perception_class(cfg: DictConfig) -> type:
    """The class ``cfg.perception`` would instantiate, without loading a model: for checks that need its
    declared properties (``age_range``) before any work starts."""
    return get_class(cfg.perception._target_)


def build_world(cfg: DictConfig) -> World:
    """Compose a world from a config holding ``generator``, ``perception``, ``device`` and ``score_chunk``."""
    return World(
        instantiate(cfg.generator),
        instantiate(cfg.perception),
        resolve_device(cfg.device),
        chunk_size=cfg.score_chunk,
    )
