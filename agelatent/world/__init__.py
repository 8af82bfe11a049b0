"""Worlds: a frozen generator + frozen face perception behind one batched ``score`` call."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from agelatent.jobs import resolve_device
from agelatent.world.base import FaceScores, Scores, World, freeze

__all__ = ["FaceScores", "Scores", "World", "build_world", "freeze"]


def build_world(cfg: DictConfig) -> World:
    """Compose a world from a config holding ``generator``, ``perception``, ``device`` and ``score_chunk``."""
    return World(
        instantiate(cfg.generator),
        instantiate(cfg.perception),
        resolve_device(cfg.device),
        chunk_size=cfg.get("score_chunk", 32),
    )
