"""A FIFO replay buffer of preallocated tensors on the environment's device.

Transitions arrive a batch at a time (one row per env) and never leave the device: no host copies, no
Python per-transition work. Sampling is uniform with replacement (as cleanrl/SB3) from its own seeded
generator, so replay draws do not depend on anything else using random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ReplayBuffer", "ReplaySample"]


@dataclass(frozen=True)
class ReplaySample:
    obs: torch.Tensor  # [N, obs_dim]
    actions: torch.Tensor  # [N, act_dim] in [-1, 1]
    rewards: torch.Tensor  # [N]
    next_obs: torch.Tensor  # [N, obs_dim]: the transition's true successor (protocol's final_obs)
    terminated: torch.Tensor  # [N] float 0/1: 1 = no bootstrap (truncation is stored as 0)

    def to(self, device: torch.device) -> ReplaySample:
        return ReplaySample(*(t.to(device, non_blocking=True) for t in self.__dict__.values()))


class ReplayBuffer:
    """``capacity`` transitions; the oldest are overwritten first."""

    #: what one transition holds, in the order :meth:`add` takes it
    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(
        self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        f32 = {"dtype": torch.float32, "device": self.device}
        self.obs = torch.empty(capacity, obs_dim, **f32)
        self.actions = torch.empty(capacity, act_dim, **f32)
        self.rewards = torch.empty(capacity, **f32)
        self.next_obs = torch.empty(capacity, obs_dim, **f32)
        self.terminated = torch.empty(capacity, **f32)
        self.pos = 0  # next row to write
        self.size = 0  # rows holding data
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Append a batch of ``B`` transitions (``obs [B, obs_dim]``, ..., ``terminated [B]`` bool)."""
        batch = len(obs)
        if batch > self.capacity:
            raise ValueError(f"cannot add {batch} transitions at once to a replay buffer of {self.capacity}")
        values = (obs, actions, rewards, next_obs, terminated.to(torch.float32))
        end = self.pos + batch
        if end <= self.capacity:
            for name, value in zip(self.FIELDS, values, strict=True):
                getattr(self, name)[self.pos : end] = value
        else:  # wraps around: split in two contiguous writes
            head = self.capacity - self.pos
            for name, value in zip(self.FIELDS, values, strict=True):
                storage = getattr(self, name)
                storage[self.pos :] = value[:head]
                storage[: batch - head] = value[head:]
        self.pos = end % self.capacity
        self.size = min(self.size + batch, self.capacity)

    def sample(self, batch_size: int) -> ReplaySample:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator, device=self.device)
        return ReplaySample(*(getattr(self, name)[idx] for name in self.FIELDS))

    def state_dict(self) -> dict:
        """The filled rows (not the empty preallocation), write position and sampling RNG state."""
        return {
            **{name: getattr(self, name)[: self.size].clone() for name in self.FIELDS},
            "pos": self.pos,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(
                f"replay state holds {size} transitions, more than this buffer's {self.capacity}"
            )
        for name in self.FIELDS:
            stored = state[name]
            target = getattr(self, name)
            if stored.shape[1:] != target.shape[1:]:
                raise ValueError(
                    f"replay state field {name!r} has rows of shape {tuple(stored.shape[1:])}, "
                    f"this buffer expects {tuple(target.shape[1:])}"
                )
            target[:size] = stored.to(self.device)
        self.pos, self.size = int(state["pos"]), size
        self.generator.set_state(state["generator"])
