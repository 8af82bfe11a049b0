"""One interface for every editing method: start latents + target ages -> a trajectory of latents and scores.

An :class:`Editor` proposes a latent displacement for every row of a :class:`~agelatent.env.latent_age.LatentAgeEnv`
from the env's current state; :func:`run_edits` drives the env (``auto_reset=False``: rows freeze when they
succeed, lose identity or time out) and records the trajectory. Because every editor moves through the same
``step_latent`` transition, they share the typical-set projection, the success/identity rules, the step limit
and the cost accounting, so a comparison differs only in how Δz is chosen.

Editors are built from their configs (``editor_settings.<name>`` with a ``_target_``, :func:`build_editor`), like
reward terms; ``agelatent-eval`` and ``agelatent-edit`` run the ones ``editors`` names.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from agelatent.env.latent_age import ActionConfig, LatentAgeEnv

__all__ = ["EditResult", "Editor", "build_editor", "run_edits"]


class Editor:
    """Base class of editing methods. A subclass takes its settings as keyword arguments (checked in its
    constructor: no model is loaded there) and writes :meth:`propose`; it may override :meth:`env_action`
    (which action mode its env needs) and :meth:`prepare` (work that needs the world, e.g. a fit)."""

    #: the editor's name in tables and file names (:func:`build_editor` sets it to its config key)
    name: str = "editor"

    def env_action(self, action: ActionConfig) -> ActionConfig:
        """The action settings of the env the editor moves, given the MDP's. Default: ``full`` mode -- the
        editor moves by raw latent steps, so the env tracks no local age direction."""
        return dataclasses.replace(action, mode="full")

    def prepare(self, env: LatentAgeEnv) -> None:
        """Called by :func:`run_edits` before each batch of edits (do one-off work once); default: nothing."""

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        """Latent displacements ``[B, d]`` for every row (frozen rows are ignored by the env)."""
        raise NotImplementedError(f"{type(self).__name__} must implement propose(env) -> [B, d]")


def build_editor(name: str, settings) -> Editor:
    """The editor ``settings`` (an ``editor_settings.<name>`` config with its ``_target_``) describes, named
    ``name``; a setting it refuses is reported as ``editor_settings.<name>: <its message>``."""
    if settings is None or "_target_" not in settings:
        raise ValueError(
            f"editor_settings.{name} has no _target_: give the editor's class, e.g. "
            f"+editor_settings.{name}={{_target_: my_module.MyEditor}} (docs/extending.md)"
        )
    try:
        editor = instantiate(settings, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ValueError(f"editor_settings.{name}: {cause}") from err
    if not isinstance(editor, Editor):
        raise TypeError(
            f"editor_settings.{name}: {type(editor).__name__} is not an agelatent.editors.Editor; subclass it"
        )
    editor.name = name
    return editor


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
    row_world_calls: torch.Tensor  # [B] the same per edit (shared lookahead calls split evenly)
    typicality: torch.Tensor  # [B] |ρ - 1| of the final latents, ρ = distance from the typical set in radii
    seconds: float
    #: ``[T+1, B]`` the age network's clean reading when the world has a robust one (``ages`` is then the
    #: robust reading); None without one
    clean_ages: torch.Tensor | None = None

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
    need = editor.env_action(env.cfg.action).mode
    if env.cfg.action.mode != need:
        raise ValueError(
            f"editor {editor.name!r} needs env action.mode={need!r}, got {env.cfg.action.mode!r}: build its "
            "env from editor.env_action(mdp.action)"
        )
    editor.prepare(env)
    calls0 = env.world_calls
    start = time.perf_counter()
    env.reset_to(start_latents, targets)
    start_images = env.images.clone()
    latents, ages, sims, p_male, clean = (
        [env.z.clone()],
        [env.ages.clone()],
        [env.similarity.clone()],
        [env.p_male.clone()],
        [env.clean_ages.clone()],
    )
    for _ in range(env.cfg.max_steps):
        if not bool(env.active.any()):
            break
        env.step_latent(editor.propose(env))
        latents.append(env.z.clone())
        ages.append(env.ages.clone())
        sims.append(env.similarity.clone())
        p_male.append(env.p_male.clone())
        clean.append(env.clean_ages.clone())
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
        row_world_calls=env.row_calls.clone(),
        typicality=(env.typical.relative_radii(env.z).mean(1) - 1).abs(),
        seconds=seconds,
        clean_ages=torch.stack(clean) if env.world.perception.robust_age is not None else None,
    )
