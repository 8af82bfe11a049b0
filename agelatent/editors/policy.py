"""The trained SAC policy as an editor (deterministic: the squashed mean action)."""

from __future__ import annotations

from pathlib import Path

import torch

from agelatent.agent.networks import SquashedGaussianActor
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.store import load_weights_only

__all__ = ["PolicyEditor"]


class PolicyEditor:
    """Acts with a trained actor on the env's observation; the env maps actions to Δz exactly as in training.

    The env must be built with the training run's env config (same action mode and observation layout).
    """

    requires_action_mode = None

    def __init__(self, actor: SquashedGaussianActor, action_mode: str, name: str = "sac_policy") -> None:
        self.actor = actor.eval().requires_grad_(False)
        self.requires_action_mode = action_mode
        self.name = name

    @classmethod
    def from_checkpoint(cls, path: str | Path, env: LatentAgeEnv, name: str = "sac_policy") -> PolicyEditor:
        path = Path(path)
        ckpt = load_weights_only(
            path, "policy checkpoint", "pass a checkpoint written by agelatent-train (runs/<name>)"
        )
        cfg = ckpt["hyper_parameters"]["cfg"]
        actor = SquashedGaussianActor(
            env.observation_dim, env.action_dim, cfg["hidden_sizes"], cfg["log_std_min"], cfg["log_std_max"]
        )
        state = {k.removeprefix("actor."): v for k, v in ckpt["state_dict"].items() if k.startswith("actor.")}
        try:
            actor.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{path}: the actor does not fit this env (observation_dim={env.observation_dim}, "
                f"action_dim={env.action_dim}); evaluate with the training run's env config ({err})"
            ) from err
        return cls(actor.to(env.device), env.cfg.action.mode, name)

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        with torch.no_grad():
            actions = self.actor.deterministic(env.observation())
        return env.displacement(actions)
