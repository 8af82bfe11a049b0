"""One interface for every editing method: start latents + target ages -> a trajectory of latents and scores.

An :class:`Editor` proposes a latent displacement for every row of a :class:`~agelatent.env.latent_age.LatentAgeEnv`
from the env's current state; :func:`run_edits` drives the env (``auto_reset=False``: rows freeze when they
succeed, lose identity or time out) and records the trajectory. Because every editor moves through the same
``step_latent`` transition, they share the typical-set projection, the success/identity rules, the step limit
and the cost accounting, so a comparison differs only in how Δz is chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch

from agelatent.env.latent_age import LatentAgeEnv

__all__ = ["EditResult", "Editor", "run_edits"]


class Editor(Protocol):
    name: str
    #: the env's action mode the editor needs ("local_linear" keeps ĝ up to date; None: any)
    requires_action_mode: str | None

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        """Latent displacements ``[B, d]`` for every row (frozen rows are ignored by the env)."""
        ...


@dataclass(frozen=True)
class EditResult:
    """A batch of edits. Trajectories are ``[T + 1, B, ...]`` (index 0 = the start face)."""

    editor: str
    start_latents: torch.Tensor  # [B, d]
    targets: torch.Tensor  # [B]
    latents: torch.Tensor  # [T+1, B, d]
    ages: torch.Tensor  # [T+1, B]
    similarity: torch.Tensor  # [T+1, B]
    p_male: torch.Tensor  # [T+1, B]
    final_images: torch.Tensor  # [B, 3, H, W]
    start_images: torch.Tensor  # [B, 3, H, W]
    outcome: torch.Tensor  # [B] agelatent.env.outcome.Outcome values
    steps: torch.Tensor  # [B] steps taken
    world_calls: int  # latents scored by the world (forward passes), all rows together
    seconds: float

    @property
    def final_ages(self) -> torch.Tensor:
        return self.ages[-1]

    @property
    def final_similarity(self) -> torch.Tensor:
        return self.similarity[-1]

    @property
    def final_latents(self) -> torch.Tensor:
        return self.latents[-1]


def run_edits(
    env: LatentAgeEnv, editor: Editor, start_latents: torch.Tensor, targets: torch.Tensor
) -> EditResult:
    """Run ``editor`` from ``start_latents`` towards ``targets`` until every row has finished."""
    if env.auto_reset:
        raise ValueError("run_edits needs an env built with auto_reset=False (finished rows must stay put)")
    need = getattr(editor, "requires_action_mode", None)
    if need is not None and env.cfg.action.mode != need:
        raise ValueError(
            f"editor {editor.name!r} needs env action.mode={need!r}, got {env.cfg.action.mode!r}"
        )
    calls0 = env.world_calls
    start = time.perf_counter()
    env.reset_to(start_latents, targets)
    start_images = env.images.clone()
    latents, ages, sims, p_male = (
        [env.z.clone()],
        [env.ages.clone()],
        [env.similarity.clone()],
        [env.p_male.clone()],
    )
    for _ in range(env.cfg.max_steps):
        if not bool(env.active.any()):
            break
        env.step_latent(editor.propose(env))
        latents.append(env.z.clone())
        ages.append(env.ages.clone())
        sims.append(env.similarity.clone())
        p_male.append(env.p_male.clone())
    seconds = time.perf_counter() - start
    return EditResult(
        editor=editor.name,
        start_latents=env.z0.clone(),
        targets=env.targets.clone(),
        latents=torch.stack(latents),
        ages=torch.stack(ages),
        similarity=torch.stack(sims),
        p_male=torch.stack(p_male),
        final_images=env.images.clone(),
        start_images=start_images,
        outcome=env.outcome.clone(),
        steps=env.t.clone(),
        world_calls=env.world_calls - calls0,
        seconds=seconds,
    )
