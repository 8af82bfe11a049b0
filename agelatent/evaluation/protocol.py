"""The evaluation protocol (DESIGN.md §4): every editor on the same held-out faces x target grid, under the
same MDP rules, scored by the reward's networks and optionally by a different evaluator.

Rows of the results table are editors; columns are the metrics of :mod:`agelatent.evaluation.metrics`
with bootstrap 95% CIs, plus ``evaluator_*`` columns when an evaluator is configured (the final and start
images re-scored by a second perception: a different alignment of the same networks, or another ONNX age
model), which exposes an editor that games the reward's own networks.

When a trained policy is evaluated, the MDP (env, action, identity, target groups) is taken from its run's
saved config, so the policy acts exactly as it was trained and the baselines face the same rules.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.rewards import Reward
from agelatent.evaluation.metrics import bootstrap_ci, summarise
from agelatent.evaluation.training_report import edit_grid, held_out_edits, write_edits_csv

__all__ = ["EDITORS", "evaluate", "policy_run", "write_table"]

log = logging.getLogger(__name__)

EDITORS = ("sac_policy", "local_linear_walk", "global_direction", "gradient_descent", "random_walk")
MDP_GROUPS = ("env", "action", "identity", "target")


def policy_run(policy: str | Path) -> tuple[Path, DictConfig | None]:
    """``policy`` = a run directory or a checkpoint file -> (checkpoint, the run's saved config or None)."""
    path = Path(policy)
    ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"policy={policy}: no checkpoint at {ckpt}; pass a training run directory (runs/<name>) or its "
            "checkpoints/last.ckpt, or drop sac_policy from editors"
        )
    run_dir = ckpt.parent.parent
    saved = run_dir / "config.yaml"
    return ckpt, (OmegaConf.load(saved) if saved.is_file() else None)


def mdp_config(cfg: DictConfig, run_cfg: DictConfig | None) -> LatentAgeEnvConfig:
    source = run_cfg if run_cfg is not None else cfg
    d = OmegaConf.to_container(source.env, resolve=True)
    for key in ("action", "identity", "target"):
        d[key] = OmegaConf.to_container(source[key], resolve=True)
    return LatentAgeEnvConfig.from_dict(d)


def _neutral_reward() -> Reward:
    from agelatent.env.rewards import AgeProgress

    return Reward({"age_progress": AgeProgress()})  # editors are judged by metrics, not by reward


def make_editor(name: str, cfg: DictConfig, world, env_cfg: LatentAgeEnvConfig):
    s = cfg.editor_settings
    a = env_cfg.action
    if name == "local_linear_walk":
        return LocalLinearWalk(a.max_years_per_step, a.max_step_norm)
    if name == "global_direction":
        fit = fit_global_direction(world, s.global_direction.num_samples, s.global_direction.seed)
        return GlobalDirection(fit["w"], a.max_years_per_step, a.max_step_norm)
    if name == "gradient_descent":
        g = s.gradient_descent
        return GradientDescent(g.step_norm, g.age_scale, g.identity_weight)
    if name == "random_walk":
        return RandomWalk(s.random_walk.step_norm, seed=int(cfg.seed))
    raise ValueError(f"unknown editor {name!r}; known: {EDITORS}")


def validate(cfg: DictConfig) -> None:
    unknown = [e for e in cfg.editors if e not in EDITORS]
    if unknown:
        raise ValueError(f"editors: unknown {unknown}; choose from {list(EDITORS)}")
    if "sac_policy" in cfg.editors and not cfg.policy:
        raise ValueError(
            "editors includes sac_policy but policy is null: set policy=runs/<name> (a training run)"
        )
    if cfg.faces.num < 1 or not cfg.targets:
        raise ValueError(
            f"faces.num must be >= 1 and targets non-empty, got {cfg.faces.num} and {cfg.targets}"
        )
    bad = [t for t in cfg.targets if not 0 <= t <= 80]
    if bad:
        raise ValueError(f"targets must be ages in the age model's range [0, 80], got {bad}")


def _evaluator_scores(evaluator, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        scores = evaluator(images)
    return scores.ages_years, scores.identity


def evaluate(cfg: DictConfig, out_dir: Path, world=None) -> list[dict[str, Any]]:
    """Run the protocol; writes ``results.csv``, ``results.md``, ``edits.csv`` and ``grid_<editor>.png``."""
    validate(cfg)
    ckpt, run_cfg = policy_run(cfg.policy) if cfg.policy else (None, None)
    env_cfg = mdp_config(cfg, run_cfg)
    if world is None:
        from agelatent.world import build_world

        world = build_world(cfg)
    evaluator = None
    if cfg.get("evaluator") and cfg.evaluator.get("_target_"):
        evaluator = instantiate(cfg.evaluator).to(world.device).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = [float(t) for t in cfg.targets]
    starts, target_t, seeds = held_out_edits(world, cfg.faces.num, cfg.faces.first_seed, targets)
    rows, results = [], {}
    for name in cfg.editors:
        # the policy acts in its trained action mode and the walk needs ĝ from the env; the others run in the
        # cheaper `full` mode (same transition rules: they move by raw latent steps)
        mode = {"sac_policy": env_cfg.action.mode, "local_linear_walk": "local_linear"}.get(name, "full")
        ecfg = dataclasses.replace(
            env_cfg, num_envs=len(seeds), action=dataclasses.replace(env_cfg.action, mode=mode)
        )
        env = LatentAgeEnv(world, ecfg, _neutral_reward(), auto_reset=False)
        editor = (
            PolicyEditor.from_checkpoint(ckpt, env)
            if name == "sac_policy"
            else make_editor(name, cfg, world, ecfg)
        )
        result = run_edits(env, editor, starts, target_t)
        summary = summarise(result, env_cfg.identity.hard_bound, cfg.success_years, seed=cfg.bootstrap.seed)
        if evaluator is not None:
            summary.update(_evaluator_summary(evaluator, result, env_cfg, cfg))
        rows.append({"editor": name, **summary})
        results[name] = result
        edit_grid(result, cfg.faces.num, targets, min(cfg.grid_faces, cfg.faces.num)).save(
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
        env_cfg=env_cfg,
        cfg=cfg,
    )
    return rows


def _evaluator_summary(evaluator, result: EditResult, env_cfg, cfg) -> dict[str, float]:
    ages, ident = _evaluator_scores(evaluator, result.final_images)
    _, ident0 = _evaluator_scores(evaluator, result.start_images)
    sim = evaluator.identity_similarity(ident, ident0)
    err = (ages - result.targets).abs()
    kept = sim >= env_cfg.identity.hard_bound
    out = {}
    for key, values in (
        ("evaluator_age_error", err),
        ("evaluator_success_rate", ((err <= cfg.success_years) & kept).float()),
        ("evaluator_similarity", sim),
    ):
        ci = bootstrap_ci(values, seed=cfg.bootstrap.seed)
        out[key], out[key + "_low"], out[key + "_high"] = ci.mean, ci.low, ci.high
    return out


TABLE_COLUMNS = (
    ("success_rate", "success"),
    ("age_error", "age error (y)"),
    ("similarity", "identity sim."),
    ("bound_rate", "bound kept"),
    ("gender_flip_rate", "gender flips"),
    ("typicality", "typicality"),
    ("world_calls_per_edit", "world calls / edit"),
    ("seconds_per_edit", "s / edit"),
)


def write_table(
    rows: list[dict[str, Any]],
    stem: Path,
    *,
    title: str,
    env_cfg: LatentAgeEnvConfig | None = None,
    cfg=None,
    key: str | tuple[str, ...] = "editor",
    note: str | None = None,
) -> None:
    """``<stem>.csv`` (every column) and ``<stem>.md`` (mean [95% CI] of the main metrics)."""
    stem = Path(stem)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    shown = [(k, label) for k, label in TABLE_COLUMNS if any(k in r for r in rows)]
    if any("evaluator_age_error" in r for r in rows):
        shown += [
            ("evaluator_success_rate", "success (evaluator)"),
            ("evaluator_age_error", "age error (evaluator)"),
        ]
    lines = [f"# {title}", ""] + ([note, ""] if note else [])
    if env_cfg is not None and cfg is not None:
        lines += [
            f"{cfg.faces.num} held-out faces (seeds from {cfg.faces.first_seed}) x targets "
            f"{', '.join(f'{float(t):g}' for t in cfg.targets)}; at most {env_cfg.max_steps} steps; success = within "
            f"{cfg.success_years:g} years of the target with identity similarity >= {env_cfg.identity.hard_bound:g}. "
            "Mean [95% bootstrap CI].",
            "",
        ]
    keys = (key,) if isinstance(key, str) else tuple(key)
    lines.append("| " + " | ".join([*keys] + [label for _, label in shown]) + " |")
    lines.append("|" + " --- |" * (len(shown) + len(keys)))
    for r in rows:
        cells = [str(r.get(k, "")) for k in keys]
        for k, _ in shown:
            if k not in r:
                cells.append("")
            elif f"{k}_low" in r:
                cells.append(f"{r[k]:.2f} [{r[k + '_low']:.2f}, {r[k + '_high']:.2f}]")
            else:
                cells.append(f"{r[k]:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
