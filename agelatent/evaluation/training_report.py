"""What a training run leaves for a reader: the policy on the validation faces x target ages (the
``protocol`` group), as an edit grid (``edit_grid.png``), per-edit rows (``eval.csv``) and ``summary.md``.
Test faces are for ``agelatent-eval``; a training run never looks at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agelatent.editors import PolicyEditor, run_edits
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.evaluation.held_out import held_out_edits
from agelatent.evaluation.metrics import summarise
from agelatent.reports.grids import edit_grid
from agelatent.reports.tables import protocol_note, write_edits_csv
from agelatent.runs import RunDir

__all__ = ["write_training_report"]


def write_training_report(
    cfg: DictConfig,
    run: RunDir,
    world,
    env_cfg: LatentAgeEnvConfig,
    checkpoint: Path,
    *,
    train_seconds: float,
    env_steps: int,
) -> dict[str, Any]:
    protocol = cfg.protocol
    targets = [float(t) for t in protocol.targets]
    starts, target_t, seeds = held_out_edits(world, protocol)
    env = LatentAgeEnv.for_edits(world, env_cfg, len(seeds))
    result = run_edits(env, PolicyEditor(policy=checkpoint), starts, target_t)
    summary: dict[str, Any] = summarise(result, env_cfg.identity.hard_bound, protocol)
    summary.update(train_minutes=train_seconds / 60, env_steps=env_steps)

    edit_grid(result, targets, min(protocol.grid_faces, protocol.num_faces)).save(run.path / "edit_grid.png")
    bound = env_cfg.identity.hard_bound
    write_edits_csv(run.path / "eval.csv", [result], seeds, bound, protocol.success_window_years)
    lines = [
        f"# {run.name}",
        "",
        f"SAC policy after {env_steps} environment steps ({train_seconds / 60:.1f} min this session) on the "
        f"validation faces: {protocol_note(protocol, env_cfg.max_steps, bound)}",
        "",
        "| metric | mean | 95% CI |",
        "| --- | --- | --- |",
    ]
    for key, label in (
        (
            "success_rate",
            f"success rate (within {protocol.success_window_years:g} years, identity >= {bound:g})",
        ),
        ("age_error", "final age error (years)"),
        ("similarity", "identity similarity to the start face"),
        ("bound_rate", f"identity >= hard bound {bound:g}"),
        ("gender_flip_rate", "gender flips"),
        ("steps", "steps per edit"),
    ):
        lines.append(
            f"| {label} | {summary[key]:.3f} | [{summary[key + '_low']:.3f}, {summary[key + '_high']:.3f}] |"
        )
    lines += [
        "",
        f"World calls per edit: {summary['world_calls_per_edit']:.1f}; seconds per edit: {summary['seconds_per_edit']:.3f}.",
        f"Action parameterisation `{env_cfg.action.mode}`, target conditioning `{env_cfg.target.mode}`, identity "
        f"soft threshold {env_cfg.identity.soft_threshold:g} / hard bound {bound:g}.",
        "",
        "Files: `edit_grid.png` (rows: validation faces; columns: start, then each target), `eval.csv` (one row "
        "per edit), `metrics.csv` (training curves), `checkpoints/last.ckpt`, `wandb/` (offline W&B run).",
    ]
    (run.path / "summary.md").write_text("\n".join(lines) + "\n")
    return summary
