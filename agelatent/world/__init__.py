"""Worlds: a frozen generator + frozen face perception behind one batched ``score`` call."""

from __future__ import annotations

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from agelatent.world.base import FaceScores, Scores, World, freeze

__all__ = [
    "FaceScores",
    "Scores",
    "World",
    "build_world",
    "check_run_settings",
    "freeze",
    "perception_class",
    "resolve_device",
]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else CPU; anything else must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={name!r} is not a device: use auto, cpu, cuda, cuda:<index> or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name!r} requested but CUDA is not available; use device=cpu or device=auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1} or device=auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} requested but MPS is not available; use device=cpu or device=auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: agelatent runs on cpu, cuda or mps")
    return device


def check_run_settings(cfg: DictConfig) -> None:
    """The job-level settings every entry point shares -- ``device``, ``threads``, ``score_chunk``,
    ``seed`` -- checked before any model loads, each error naming the key, the value and what is allowed."""
    resolve_device(cfg.device)
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be null (torch's default) or an integer >= 1, got {threads!r}")
    chunk = cfg.get("score_chunk")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"score_chunk must be an integer >= 1 (faces per world forward), got {chunk!r}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def perception_class(cfg: DictConfig) -> type:
    """The class ``cfg.perception`` would instantiate, without loading a model: for checks that need its
    declared properties (``age_range``) before any work starts."""
    return get_class(cfg.perception._target_)


def build_world(cfg: DictConfig) -> World:
    """Compose a world from a config holding ``generator``, ``perception``, ``device`` and ``score_chunk``."""
    device = resolve_device(cfg.device)  # a bad device fails before a model loads
    return World(
        instantiate(cfg.generator),
        instantiate(cfg.perception),
        device,
        chunk_size=cfg.score_chunk,
    )
