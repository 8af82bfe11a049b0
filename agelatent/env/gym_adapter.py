"""N copies of a gymnasium Box environment behind the batched protocol (:mod:`agelatent.env.batched`).

A plain loop over the copies rather than ``gymnasium.vector.SyncVectorEnv``: gymnasium 1.x vector envs
auto-reset on the *next* step by default (that step ignores its action), and the same-step mode reports
final observations through object arrays in ``info``; the loop makes the protocol's same-step auto-reset
and ``final_obs`` explicit in a few lines. It is an adapter for tests and baselines, not a fast path.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from agelatent.env.batched import StepResult

__all__ = ["GymBoxEnv"]

#: actions may exceed [-1, 1] by this much (float rounding of tanh) before they count as a caller bug
_ACTION_TOLERANCE = 1e-5


class GymBoxEnv:
    """``num_envs`` copies of a gymnasium env with Box observations and a 1-D Box action space.

    Actions in ``[-1, 1]`` are mapped affinely to the action space's ``[low, high]``; observations are
    flattened to ``float32 [B, observation_dim]``. Copy ``i`` is seeded with ``seed + i`` on :meth:`reset`.
    """

    def __init__(
        self,
        env: str | Callable[[], gym.Env],
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        **make_kwargs,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        make = (lambda: gym.make(env, **make_kwargs)) if isinstance(env, str) else env
        self.envs = [make() for _ in range(num_envs)]
        name = env if isinstance(env, str) else getattr(self.envs[0].spec, "id", repr(env))
        obs_space, act_space = self.envs[0].observation_space, self.envs[0].action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"{name}: observation space must be a Box, got {obs_space}")
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            raise ValueError(f"{name}: action space must be a 1-D Box, got {act_space}")
        if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
            raise ValueError(f"{name}: action bounds must be finite to rescale [-1, 1], got {act_space}")

        self.num_envs = num_envs
        self.observation_dim = int(np.prod(obs_space.shape))
        self.action_dim = int(act_space.shape[0])
        self.device = torch.device(device)
        self._low = act_space.low.astype(np.float64)
        self._half_range = (act_space.high.astype(np.float64) - self._low) / 2.0
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._started = False

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs = [env.reset(seed=None if seed is None else seed + i)[0] for i, env in enumerate(self.envs)]
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._started = True
        return self._to_tensor(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        if not self._started:
            raise RuntimeError("GymBoxEnv.step called before reset()")
        if tuple(actions.shape) != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must have shape [B, act_dim] = {(self.num_envs, self.action_dim)}, "
                f"got {tuple(actions.shape)}"
            )
        unit = actions.detach().to("cpu", torch.float64).numpy()
        if not np.all(np.abs(unit) <= 1.0 + _ACTION_TOLERANCE):
            raise ValueError(f"actions must lie in [-1, 1], got range [{unit.min():.4g}, {unit.max():.4g}]")
        scaled = self._low + (np.clip(unit, -1.0, 1.0) + 1.0) * self._half_range

        obs, final_obs = [], []
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        returns = np.zeros(self.num_envs, dtype=np.float64)
        lengths = np.zeros(self.num_envs, dtype=np.int64)
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(scaled[i].astype(env.action_space.dtype))
            self._returns[i] += float(r)
            self._lengths[i] += 1
            rewards[i], terminated[i], truncated[i] = r, term, trunc
            returns[i], lengths[i] = self._returns[i], self._lengths[i]
            final_obs.append(o)
            if term or trunc:
                o, _ = env.reset()
                self._returns[i], self._lengths[i] = 0.0, 0
            obs.append(o)

        dev = self.device
        return StepResult(
            obs=self._to_tensor(obs),
            final_obs=self._to_tensor(final_obs),
            reward=torch.from_numpy(rewards).to(dev),
            terminated=torch.from_numpy(terminated).to(dev),
            truncated=torch.from_numpy(truncated).to(dev),
            episode_return=torch.from_numpy(returns.astype(np.float32)).to(dev),
            episode_length=torch.from_numpy(lengths).to(dev),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _to_tensor(self, obs: list[np.ndarray]) -> torch.Tensor:
        flat = np.stack([np.asarray(o, dtype=np.float32).reshape(-1) for o in obs])
        return torch.from_numpy(flat).to(self.device)
