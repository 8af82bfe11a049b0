"""The training reward as ``make train`` composes it, for tests and tools that build envs directly."""

from __future__ import annotations

from agelatent.config import compose_config
from agelatent.env.rewards import Reward

__all__ = ["composed_reward"]


def composed_reward(*overrides: str) -> Reward:
    """``conf/reward/`` as composed by ``conf/train.yaml`` with Hydra ``overrides`` (e.g. ``identity=arcface``)."""
    return Reward.from_config(compose_config("train", list(overrides)).reward)
