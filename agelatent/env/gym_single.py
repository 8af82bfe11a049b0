"""A single episode of the latent age-editing MDP as a ``gymnasium.Env`` (numpy in, numpy out).

For tooling that expects gymnasium (its env checker, wrappers, other RL libraries); training uses the
batched :class:`~agelatent.env.latent_age.LatentAgeEnv` directly. ``reset(seed=s)`` seeds the start face
and target; ``step`` returns ``(obs, reward, terminated, truncated, info)`` with per-step diagnostics.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import torch

from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.rewards import Reward

__all__ = ["LatentAgeGymEnv"]


class LatentAgeGymEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, world, cfg: LatentAgeEnvConfig, reward: Reward, render_mode: str | None = None):
        self.env = LatentAgeEnv(world, dataclasses.replace(cfg, num_envs=1), reward, auto_reset=False)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.env.observation_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.env.action_dim,), np.float32)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:  # continue from gymnasium's seeded RNG so unseeded resets still differ
            seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self.env.reset(seed=seed)
        return obs[0].cpu().numpy(), self._info()

    def step(self, action):
        if not bool(self.env.active[0]):
            raise RuntimeError("the episode has ended: call reset() before step()")
        actions = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        result = self.env.step(actions)
        info = self._info() | {k: float(v[0]) for k, v in result.info.items() if v.ndim == 1}
        return (
            result.final_obs[0].cpu().numpy(),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )

    def _info(self) -> dict:
        e = self.env
        return {"age": float(e.ages[0]), "target": float(e.targets[0]), "similarity": float(e.similarity[0])}

    def render(self):
        if self.render_mode != "rgb_array" or self.env.images is None:
            return None
        img = ((self.env.images[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img.permute(1, 2, 0).cpu().numpy()
