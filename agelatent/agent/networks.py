"""SAC networks: a tanh-squashed Gaussian actor and twin Q critics (cleanrl ``sac_continuous_action.py``).

Actions live in ``[-1, 1]`` (the batched env protocol's unit box), so unlike cleanrl the actor has no
action scale/bias: the environment maps the unit box to its own units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "QNetwork",
    "SquashedGaussianActor",
    "TwinQ",
    "mlp",
    "polyak_update",
    "squashed_gaussian_log_prob",
]

_LOG_2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ending in a linear layer (PyTorch default init, as cleanrl)."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def squashed_gaussian_log_prob(
    pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """log π(a) for ``a = tanh(u)``, ``u ~ N(mean, exp(log_std)²)``, summed over the last dim: ``[B]``.

    Change of variables: log π(a) = log N(u) − Σ log(1 − tanh²u). The Jacobian term uses the exact
    identity log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u)) (Spinning Up) instead of cleanrl's
    log(1 − a² + 1e-6): no ε bias, and finite even where tanh(u) rounds to ±1 in float32.
    """
    z = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = -0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI
    log_det_jacobian = 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_det_jacobian).sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """obs ``[B, obs_dim]`` → a tanh-squashed diagonal Gaussian over actions in ``[-1, 1]^act_dim``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, hidden_sizes[:-1], hidden_sizes[-1])
        self.mean = nn.Linear(hidden_sizes[-1], act_dim)
        self.log_std = nn.Linear(hidden_sizes[-1], act_dim)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the pre-squash Gaussian's ``(mean, log_std)``, each ``[B, act_dim]``."""
        h = F.relu(self.trunk(obs))
        # log std bounded smoothly by a rescaled tanh into [log_std_min, log_std_max] (cleanrl, from
        # Spinning Up / Yarats); SB3 hard-clamps to [-20, 2] instead.
        squashed = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (squashed + 1.0)
        return self.mean(h), log_std

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: ``(actions [B, act_dim] in [-1, 1], log_prob [B])``.

        The noise comes from ``generator`` (not the global RNG) so a run is reproducible from its seed
        whatever else draws random numbers in the process.
        """
        mean, log_std = self(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The squashed mean ``tanh(mean)`` ``[B, act_dim]``: the evaluation action."""
        return torch.tanh(self(obs)[0])


class QNetwork(nn.Module):
    """Q(s, a): ``obs [B, obs_dim]``, ``actions [B, act_dim]`` → ``[B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden_sizes, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


class TwinQ(nn.Module):
    """Two independent Q networks (clipped double Q); ``forward`` returns ``(q1 [B], q2 [B])``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q1 = QNetwork(obs_dim, act_dim, hidden_sizes)
        self.q2 = QNetwork(obs_dim, act_dim, hidden_sizes)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(obs, actions), self.q2(obs, actions)

    def min_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q1, q2 = self(obs, actions)
        return torch.minimum(q1, q2)


@torch.no_grad()
def polyak_update(online: Iterable[torch.Tensor], target: Iterable[torch.Tensor], tau: float) -> None:
    """In place: ``target ← (1 − τ)·target + τ·online`` for each pair (one fused multi-tensor lerp)."""
    online, target = list(online), list(target)
    if len(online) != len(target):
        raise ValueError(f"polyak_update needs matching tensor lists, got {len(online)} and {len(target)}")
    torch._foreach_lerp_(target, online, tau)
