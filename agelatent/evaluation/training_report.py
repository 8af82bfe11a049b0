"""What a training run leaves for a reader: the policy evaluated on held-out faces x target ages, as an edit
grid (``edit_grid.png``), per-edit rows (``eval.csv``) and a short ``summary.md``."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from agelatent.editors import OUTCOMES, EditResult, PolicyEditor, run_edits
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.evaluation.metrics import summarise
from agelatent.reports.grids import image_grid

__all__ = ["edit_grid", "held_out_edits", "write_edits_csv", "write_training_report"]


def held_out_edits(
    world, num_faces: int, first_seed: int, targets: list[float]
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every held-out face paired with every target: (start latents ``[F*T, d]``, targets ``[F*T]``, seeds)."""
    seeds = list(range(first_seed, first_seed + num_faces))
    latents = world.sample_latents(seeds).repeat_interleave(len(targets), dim=0)
    target_t = torch.tensor([float(t) for t in targets], device=latents.device).repeat(num_faces)
    return latents, target_t, [s for s in seeds for _ in targets]


def edit_grid(result: EditResult, num_faces: int, targets: list[float], rows: int):
    """Rows: faces; columns: the start face, then the final face for each target (caption: age, similarity)."""
    n_t = len(targets)
    images, captions = [], []
    for f in range(rows):
        first = f * n_t
        row_images = [result.start_images[first]] + [result.final_images[first + j] for j in range(n_t)]
        row_caps = [f"start {result.ages[0, first]:.0f}y"]
        for j in range(n_t):
            i = first + j
            mark = {1: "ok", 2: "id lost", 3: "timeout"}.get(int(result.outcome[i]), "")
            row_caps.append(f"{result.final_ages[i]:.0f}y sim {result.final_similarity[i]:.2f}\n{mark}")
        images.append(torch.stack(row_images))
        captions.append(row_caps)
    titles = ["start"] + [f"target {t:g}" for t in targets]
    return image_grid(torch.stack(images), captions, titles)


def write_edits_csv(path: Path, results: list[EditResult], seeds: list[int]) -> None:
    """One row per edit of every result (all over the same ``seeds`` x targets)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "editor",
                "seed",
                "target",
                "start_age",
                "final_age",
                "age_error",
                "similarity",
                "outcome",
                "steps",
            ]
        )
        for result in results:
            for i, seed in enumerate(seeds):
                w.writerow(
                    [
                        result.editor,
                        seed,
                        f"{result.targets[i]:.1f}",
                        f"{result.ages[0, i]:.2f}",
                        f"{result.final_ages[i]:.2f}",
                        f"{(result.final_ages[i] - result.targets[i]).abs():.2f}",
                        f"{result.final_similarity[i]:.4f}",
                        OUTCOMES[int(result.outcome[i])],
                        int(result.steps[i]),
                    ]
                )


def write_training_report(
    cfg: DictConfig,
    run_dir: Path,
    world,
    env_cfg: LatentAgeEnvConfig,
    reward,
    checkpoint: Path,
    *,
    train_seconds: float,
    env_steps: int,
) -> dict[str, Any]:
    ev = cfg.eval
    targets = [float(t) for t in ev.targets]
    starts, target_t, seeds = held_out_edits(world, ev.num_faces, ev.first_seed, targets)
    env = LatentAgeEnv(world, dataclasses.replace(env_cfg, num_envs=len(seeds)), reward, auto_reset=False)
    editor = PolicyEditor.from_checkpoint(checkpoint, env)
    result = run_edits(env, editor, starts, target_t)
    summary: dict[str, Any] = summarise(result, env_cfg.identity.hard_bound)
    summary.update(train_minutes=train_seconds / 60, env_steps=env_steps)

    edit_grid(result, ev.num_faces, targets, ev.grid_faces).save(run_dir / "edit_grid.png")
    write_edits_csv(run_dir / "eval.csv", [result], seeds)
    lines = [
        f"# {run_dir.name}",
        "",
        f"SAC policy after {env_steps} environment steps ({train_seconds / 60:.1f} min this session), evaluated on "
        f"{ev.num_faces} held-out faces (seeds {ev.first_seed}..{ev.first_seed + ev.num_faces - 1}) x targets "
        f"{', '.join(f'{t:g}' for t in targets)} = {len(seeds)} edits, at most {env_cfg.max_steps} steps each.",
        "",
        "| metric | mean | 95% CI |",
        "| --- | --- | --- |",
    ]
    for key, label in (
        ("success_rate", "success rate (within 5 years of the target, identity >= hard bound)"),
        ("age_error", "final age error (years)"),
        ("similarity", "identity similarity to the start face"),
        ("bound_rate", f"identity >= hard bound {env_cfg.identity.hard_bound:g}"),
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
        f"soft threshold {env_cfg.identity.soft_threshold:g} / hard bound {env_cfg.identity.hard_bound:g}.",
        "",
        "Files: `edit_grid.png` (rows: held-out faces; columns: start, then each target), `eval.csv` (one row per "
        "edit), `metrics.csv` (training curves), `checkpoints/last.ckpt`, `wandb/` (offline W&B run).",
    ]
    (run_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return summary
