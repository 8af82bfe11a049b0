"""Editors compared under one protocol (docs/design.md, "Evaluation"): every editor on the same held-out
faces x target grid, under the same MDP rules, scored by the reward's networks and optionally by a second
evaluator.

Rows of the results table are editors; columns are the metrics of :mod:`agelatent.evaluation.metrics`
with bootstrap 95% CIs, plus ``<evaluator>/<metric>`` columns for every configured second evaluator
(``conf/evaluator/``), which expose an editor that games the reward's own networks. Two kinds:

* ``kind: perception`` (``realigned``, ``onnx_age``): the final and start images re-scored by a second
  perception -- a different alignment of the same networks, or another ONNX age model -- giving
  ``success_rate``, ``age_error`` and ``similarity`` as that perception sees them.
* ``kind: independent_age`` (``agender``): an independent age model with its own scale, giving
  ``direction_agreement`` and ``confirmation`` (:mod:`agelatent.evaluation.independent`).

When a trained policy is evaluated, the MDP (the ``MDP_GROUPS``: env, action, identity, target) is taken
from its run's saved config, so the policy acts exactly as it was trained and the baselines face the same
rules.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from agelatent.editors import (
    EditResult,
    GlobalDirection,
    GradientDescent,
    LocalLinearWalk,
    PolicyEditor,
    RandomWalk,
    fit_global_direction,
    run_edits,
)
from agelatent.env.latent_age import MDP_GROUPS, LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.rewards import Reward
from agelatent.evaluation.held_out import check_protocol, held_out_edits
from agelatent.evaluation.independent import calibrate, independent_summary
from agelatent.evaluation.metrics import bootstrap_ci, summarise
from agelatent.reports.grids import edit_grid
from agelatent.reports.tables import protocol_note, write_edits_csv, write_table
from agelatent.runs import RunDir

__all__ = [
    "EDITORS",
    "EVALUATOR_KINDS",
    "editor_env_config",
    "evaluate",
    "make_editor",
    "validate",
    "validate_editors",
]

log = logging.getLogger(__name__)

EDITORS = ("sac_policy", "local_linear_walk", "global_direction", "gradient_descent", "random_walk")
EVALUATOR_KINDS = ("perception", "independent_age")


def editor_env_config(name: str, cfg: DictConfig, env_cfg: LatentAgeEnvConfig, num_envs: int):
    """The MDP an editor runs under: the policy's (``env_cfg``) with ``num_envs`` parallel edits, in the
    action mode the editor needs -- the policy its trained one, the walk ``local_linear`` with its own
    step cap and kept quantities (``editor_settings.local_linear_walk``), the others the cheaper ``full``
    mode (same transition rules: they move by raw latent steps)."""
    action = env_cfg.action
    if name == "local_linear_walk":
        walk = cfg.editor_settings.local_linear_walk
        try:
            action = dataclasses.replace(
                action, mode="local_linear", max_step_norm=walk.max_step_norm, keep=tuple(walk.keep)
            )
        except ValueError as err:
            raise ValueError(f"editor_settings.local_linear_walk: {err}") from None
    elif name != "sac_policy":
        action = dataclasses.replace(action, mode="full")
    return dataclasses.replace(env_cfg, num_envs=num_envs, action=action)


def make_editor(name: str, cfg: DictConfig, world, env_cfg: LatentAgeEnvConfig):
    s = cfg.editor_settings
    if name == "local_linear_walk":
        return LocalLinearWalk(max_years_per_step=s.local_linear_walk.max_years_per_step)
    if name == "global_direction":
        g = s.global_direction
        fit = fit_global_direction(world, g.num_samples, g.first_seed)
        return GlobalDirection(
            fit["w"], max_years_per_step=g.max_years_per_step, max_step_norm=g.max_step_norm
        )
    if name == "gradient_descent":
        g = s.gradient_descent
        return GradientDescent(
            step_norm=g.step_norm, age_scale=g.age_scale, identity_weight=g.identity_weight
        )
    if name == "random_walk":
        return RandomWalk(step_norm=s.random_walk.step_norm, seed=int(cfg.seed))
    raise ValueError(f"unknown editor {name!r}; known: {EDITORS}")


def validate(cfg: DictConfig) -> tuple[LatentAgeEnvConfig, Path | None]:
    """Every config error before any model loads; returns the MDP the editors run under and the policy's
    checkpoint (None without ``sac_policy``)."""
    from agelatent.world import check_run_settings, perception_class

    check_run_settings(cfg)
    check_protocol(cfg.protocol, perception_class(cfg).age_range, "protocol")
    for name, spec in (cfg.get("evaluator") or {}).items():
        if spec.get("kind") not in EVALUATOR_KINDS:
            raise ValueError(
                f"evaluator.{name}.kind must be one of {list(EVALUATOR_KINDS)}, got {spec.get('kind')!r}"
            )
        if spec.kind == "independent_age" and not spec.min_years > 0:
            raise ValueError(f"evaluator.{name}.min_years must be > 0, got {spec.min_years}")
    return validate_editors(cfg)


def validate_editors(cfg: DictConfig) -> tuple[LatentAgeEnvConfig, Path | None]:
    """The editors' part of :func:`validate` (also ``agelatent-edit``'s): known names, the policy when
    ``sac_policy`` is asked for, the baselines' settings, and the MDP they run under."""
    unknown = [e for e in cfg.editors if e not in EDITORS]
    if unknown:
        raise ValueError(f"editors: unknown {unknown}; choose from {list(EDITORS)}")
    if "sac_policy" in cfg.editors and not cfg.policy:
        raise ValueError(
            "editors includes sac_policy but policy is null: set policy=runs/<name> (a training run)"
        )
    ckpt, mdp_source = None, cfg
    if cfg.policy:
        run, ckpt = RunDir.of_policy(cfg.policy)
        mdp_source = _with_new_mdp_keys(run.load_config(), cfg) if run.config.is_file() else cfg
    for name in ("local_linear_walk", "global_direction"):
        for key in ("max_years_per_step", "max_step_norm"):
            value = cfg.editor_settings[name][key]
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"editor_settings.{name}.{key} must be a finite number > 0, got {value!r}")
    env_cfg = LatentAgeEnvConfig.from_config(mdp_source)
    for name in cfg.editors:  # the walk's kept quantities are checked by the action config they enter
        editor_env_config(name, cfg, env_cfg, env_cfg.num_envs)
    return env_cfg, ckpt


# MDP settings added after runs were trained with them absent, and the value that reproduces what such a run
# did (which is not always today's default: the policy has observed the face and kept identity and gender
# since the defaults changed to them).
BEHAVIOUR_BEFORE_KEY = {
    ("action", "keep"): [],
    ("action", "residual"): False,
    ("env", "observe_face"): False,
}


def _with_new_mdp_keys(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """A run's saved config, with MDP settings added to the code after the run was trained filled in, each
    named in the log: by the behaviour the code had before the key existed (``BEHAVIOUR_BEFORE_KEY``), else
    by the current default. A key the run has is never changed."""
    merged = run_cfg.copy()
    for group in MDP_GROUPS:
        for key in cfg[group]:
            if key not in run_cfg[group]:
                value = BEHAVIOUR_BEFORE_KEY.get((group, key), cfg[group][key])
                log.warning(
                    "the policy's run config predates %s.%s; using %s, the behaviour before it existed",
                    group,
                    key,
                    value,
                )
                merged[group][key] = value
    return merged


def evaluate(cfg: DictConfig, out_dir: Path, world=None) -> list[dict[str, Any]]:
    """Run the protocol; writes ``results.csv``, ``results.md``, ``edits.csv`` and ``grid_<editor>.png``."""
    env_cfg, ckpt = validate(cfg)
    if world is None:
        from agelatent.world import build_world

        world = build_world(cfg)
    evaluators = {
        name: (spec, instantiate(spec.model).to(world.device).eval())
        for name, spec in (cfg.get("evaluator") or {}).items()
    }
    calibrations = {
        name: calibrate(world, model, spec.natural_faces, spec.natural_first_seed)
        for name, (spec, model) in evaluators.items()
        if spec.kind == "independent_age"
    }
    for name, cal in calibrations.items():
        log.info(
            "%s on %d unedited faces: slope %.3f on the reward's ages (correlation %.2f)",
            name,
            len(cal.reward_ages),
            cal.slope,
            cal.correlation,
        )
    start_scores: dict[str, Any] = {}  # per evaluator, its scores of the (shared) start faces
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol = cfg.protocol
    targets = [float(t) for t in protocol.targets]
    starts, target_t, seeds = held_out_edits(world, protocol)
    rows, results = [], {}
    for name in cfg.editors:
        ecfg = editor_env_config(name, cfg, env_cfg, len(seeds))
        env = LatentAgeEnv(world, ecfg, Reward.zero(), auto_reset=False)  # editors are judged by metrics
        editor = (
            PolicyEditor.from_checkpoint(ckpt, env)
            if name == "sac_policy"
            else make_editor(name, cfg, world, ecfg)
        )
        result = run_edits(env, editor, starts, target_t)
        summary = summarise(result, env_cfg.identity.hard_bound, protocol)
        for ev_name, (spec, model) in evaluators.items():
            if ev_name not in start_scores:  # once: every editor starts from the same faces
                with torch.no_grad():
                    start_scores[ev_name] = (model if spec.kind == "perception" else model.ages)(
                        result.start_images
                    )
            if spec.kind == "perception":
                ev = _perception_summary(model, start_scores[ev_name], result, env_cfg, protocol)
            else:
                ev = independent_summary(
                    start_scores[ev_name].cpu(),
                    model.ages(result.final_images).cpu(),
                    result,
                    calibrations[ev_name],
                    spec.min_years,
                    protocol.bootstrap,
                )
            summary.update({f"{ev_name}/{k}": v for k, v in ev.items()})
        rows.append({"editor": name, **summary})
        results[name] = result
        edit_grid(result, targets, min(protocol.grid_faces, protocol.num_faces)).save(
            out_dir / f"grid_{name}.png"
        )
        log.info(
            "%s: success %.2f, |age error| %.1f, similarity %.2f",
            name,
            summary["success_rate"],
            summary["age_error"],
            summary["similarity"],
        )
    write_edits_csv(out_dir / "edits.csv", list(results.values()), seeds)
    write_table(
        rows,
        out_dir / "results",
        title=cfg.get("title") or "Editors on held-out faces",
        note=protocol_note(protocol, env_cfg.max_steps, env_cfg.identity.hard_bound),
    )
    return rows


def _perception_summary(evaluator, start, result: EditResult, env_cfg, protocol) -> dict[str, float]:
    with torch.no_grad():
        final = evaluator(result.final_images)
    sim = evaluator.identity_similarity(final.identity, start.identity)
    err = (final.ages_years - result.targets).abs()
    kept = sim >= env_cfg.identity.hard_bound
    out = {}
    for key, values in (
        ("age_error", err),
        ("success_rate", ((err <= protocol.success_window_years) & kept).float()),
        ("similarity", sim),
    ):
        ci = bootstrap_ci(values, protocol.bootstrap.resamples, protocol.bootstrap.seed)
        out[key], out[key + "_low"], out[key + "_high"] = ci.mean, ci.low, ci.high
    return out
