"""The batched environment protocol the SAC agent trains on.

An environment here is already a *batch* of ``num_envs`` independent episodes advanced together with one
call; every tensor has the batch first and lives on ``env.device``. The latent age-editing environment
implements it natively (one batched generator/perception call per step); :mod:`agelatent.env.gym_adapter`
implements it over gymnasium Box environments so the agent can be tested on known tasks.

Contract
--------
- Observations are ``float32 [B, observation_dim]``; actions are ``float32 [B, action_dim]`` in
  ``[-1, 1]`` (the environment maps them to its own units).
- :meth:`BatchedEnv.reset` starts ``B`` fresh episodes and returns their first observations.
- :meth:`BatchedEnv.step` advances every row by one action and **auto-resets** rows whose episode ended,
  so the caller never handles episodes one by one. For a row ``i`` where ``done[i]`` (= terminated or
  truncated) the step returns:

  ============================ ==========================================================================
  ``final_obs[i]``             the last observation of the episode that just ended (the true successor
                               of ``(obs, action)``): what replay must store as the next observation
  ``obs[i]``                   the first observation of the fresh episode that replaced it: what the
                               agent acts on next
  ``reward[i]``                the reward of the last transition of the ended episode
  ``terminated[i]``            True when the MDP itself ended (success, failure): the value of
                               ``final_obs`` is 0, the critic must **not** bootstrap
  ``truncated[i]``             True when the episode was cut by a time limit: ``final_obs`` still has a
                               value, the critic **must** bootstrap from it
  ``episode_return[i]``,       the undiscounted return and the number of steps of the ended episode
  ``episode_length[i]``
  ============================ ==========================================================================

  For rows that did not end, ``final_obs[i] == obs[i]`` and ``episode_return``/``episode_length`` hold
  the running totals of the episode in progress. When an episode both terminates and reaches its time
  limit on the same step, ``terminated`` wins: set it, and ``truncated`` may be set too.
- ``info`` carries optional environment-specific per-row diagnostics (``[B]`` or ``[B, ...]`` tensors on
  the same device), e.g. final age and identity similarity; the agent only logs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

__all__ = ["BatchedEnv", "StepResult", "check_observation", "check_step_result", "nonfinite_rows"]


@dataclass(frozen=True)
class StepResult:
    """What :meth:`BatchedEnv.step` returns for a batch of ``B`` rows (see the module docstring)."""

    obs: torch.Tensor  # [B, obs_dim] float32: act on this next (fresh-episode obs where done)
    final_obs: torch.Tensor  # [B, obs_dim] float32: successor of this transition; store it in replay
    reward: torch.Tensor  # [B] float32
    terminated: torch.Tensor  # [B] bool: MDP ended, do not bootstrap
    truncated: torch.Tensor  # [B] bool: time limit, bootstrap from final_obs
    episode_return: torch.Tensor  # [B] float32: return of the ended (or running) episode
    episode_length: torch.Tensor  # [B] int64: steps of the ended (or running) episode
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def done(self) -> torch.Tensor:
        """``[B]`` bool: the row's episode ended this step (and the row has been reset)."""
        return self.terminated | self.truncated


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` episodes stepped together; everything batched, on ``device`` (see module docstring)."""

    num_envs: int
    observation_dim: int
    action_dim: int
    device: torch.device

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start ``num_envs`` fresh episodes; returns ``obs [B, observation_dim]``.

        The same ``seed`` must give the same episodes; ``None`` continues the environment's own RNG.
        """
        ...

    def step(self, actions: torch.Tensor) -> StepResult:
        """Apply ``actions [B, action_dim]`` in ``[-1, 1]``; auto-reset the rows that finish."""
        ...


def check_observation(env: BatchedEnv, obs: torch.Tensor, name: str = "obs") -> None:
    """Raise ``ValueError`` unless ``obs`` is a finite float32 ``[num_envs, observation_dim]`` on the env's
    device."""
    expected = (env.num_envs, env.observation_dim)
    if tuple(obs.shape) != expected:
        raise ValueError(f"{name} must have shape [B, obs_dim] = {expected}, got {tuple(obs.shape)}")
    if obs.dtype != torch.float32:
        raise ValueError(f"{name} must be float32, got {obs.dtype}")
    if not _on_device(obs, env.device):
        raise ValueError(f"{name} must be on the env's device {env.device}, got {obs.device}")
    if not torch.isfinite(obs).all():
        raise ValueError(f"{name} has NaN/Inf entries (rows {nonfinite_rows(obs)})")


def check_step_result(env: BatchedEnv, result: StepResult) -> None:
    """Raise ``ValueError`` naming the field, the expected and the received shape/dtype/device when
    ``result`` breaks the protocol. Cheap enough for tests and for the first steps of a run."""
    check_observation(env, result.obs, "StepResult.obs")
    check_observation(env, result.final_obs, "StepResult.final_obs")
    batch = (env.num_envs,)
    for name, dtype in (
        ("reward", torch.float32),
        ("terminated", torch.bool),
        ("truncated", torch.bool),
        ("episode_return", torch.float32),
        ("episode_length", torch.int64),
    ):
        value = getattr(result, name)
        if tuple(value.shape) != batch or value.dtype != dtype:
            raise ValueError(
                f"StepResult.{name} must be {dtype} of shape [B] = {batch}, "
                f"got {value.dtype} of shape {tuple(value.shape)}"
            )
        if not _on_device(value, env.device):
            raise ValueError(
                f"StepResult.{name} must be on the env's device {env.device}, got {value.device}"
            )
    if not torch.isfinite(result.reward).all():
        raise ValueError(f"StepResult.reward has NaN/Inf entries (rows {nonfinite_rows(result.reward)})")
    not_done = ~result.done
    if not torch.equal(result.obs[not_done], result.final_obs[not_done]):
        raise ValueError("StepResult.final_obs must equal StepResult.obs on rows whose episode did not end")
    for key, value in result.info.items():
        if value.shape[:1] != batch:
            raise ValueError(
                f"StepResult.info[{key!r}] must have the batch first {batch}, got {tuple(value.shape)}"
            )


def _on_device(x: torch.Tensor, device: str | torch.device) -> bool:
    """``cuda`` (no index) means the current CUDA device, which is where such tensors land."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return x.device == device


def nonfinite_rows(x: torch.Tensor) -> list[int]:
    """The first (at most 8) batch rows of ``x`` holding NaN/Inf."""
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    return bad.nonzero().flatten()[:8].tolist()
