"""``agelatent-train``: SAC on the latent age-editing MDP. ``make train`` runs the default config.

The run directory (``runs/<run_name>/``, Hydra's output dir; its files are named by
:class:`agelatent.runs.RunDir`) ends up holding:

* ``checkpoints/last.ckpt`` — actor, critics, targets, optimisers, entropy coefficient, counters; written
  atomically and durably (temp file, fsync, rename, fsync of the directory) every
  ``callbacks.checkpoint.every_n_steps`` batched steps, every ``callbacks.checkpoint.every_minutes``, at the
  end, and on SIGINT/SIGTERM/SIGUSR2 (the step under way finishes first; the job then exits with
  ``128 + signum``, a SLURM job of the submitit launcher after requeueing itself).
  Running again with the same ``run_name`` resumes from it with the same env-step counter.
* ``metrics.csv`` — every logged metric against ``env_step``, appended to on resume.
* ``wandb/offline-run-*`` — the same run for Weights & Biases (``wandb sync`` uploads it).
* ``edit_grid.png``, ``eval.csv``, ``summary.md``, ``summary.json`` — the policy on the *validation* faces
  (``protocol=validation``): edit grid, one row per edit, and the metrics with 95% CIs.
* ``config.yaml`` — the resolved config (``.hydra/`` also holds Hydra's overrides when run from the CLI).
* ``FAILED.txt`` — only while the last attempt failed: its error and traceback.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console

from agelatent.agent.imitation import DemonstrationsConfig, behaviour_clone, collect_demonstrations
from agelatent.agent.metrics_csv import MetricsCSVLogger
from agelatent.agent.sac import SACConfig, SACModule, sac_trainer
from agelatent.config import CONFIG_DIR
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.rewards import Reward
from agelatent.evaluation.held_out import check_protocol
from agelatent.evaluation.metrics import SUMMARY_KEYS
from agelatent.perception.embedded import AlignmentJitter
from agelatent.runs import JobInterrupted, RunDir, run_job, wandb_settings
from agelatent.store import load_weights_only
from agelatent.world import build_world, check_run_settings, perception_class


@dataclass(frozen=True)
class TrainingSetup:
    """Everything :func:`validate` builds from a config before any model is loaded."""

    env: LatentAgeEnvConfig
    sac: SACConfig
    reward: Reward
    callbacks: list[L.Callback]
    demonstrations: DemonstrationsConfig


def validate(cfg: DictConfig) -> TrainingSetup:
    """Every config error surfaces here, before any model is loaded."""
    check_run_settings(cfg)
    env_cfg = LatentAgeEnvConfig.from_config(cfg)
    age_range = perception_class(cfg).age_range
    env_cfg.target.check_age_range(age_range)
    check_protocol(cfg.protocol, age_range, "protocol")
    if cfg.perception.get("age_jitter"):
        AlignmentJitter(**cfg.perception.age_jitter)
    setup = TrainingSetup(
        env=env_cfg,
        sac=SACConfig.from_config(cfg),
        reward=Reward.from_config(cfg.reward),
        callbacks=[_callback(c) for c in (cfg.callbacks or {}).values() if c is not None],
        demonstrations=DemonstrationsConfig.from_config(cfg),
    )
    teacher = setup.demonstrations.teacher
    if setup.demonstrations.enabled:
        if env_cfg.action.mode not in ("full", "semantic"):
            raise ValueError(
                "demonstrations teach an action=full or action=semantic policy, but "
                f"action.mode={env_cfg.action.mode}: use experiment=amortized, or demonstrations=none"
            )
        if teacher not in cfg.editor_settings:
            raise ValueError(
                f"demonstrations.teacher={teacher!r} is not an editor of editor_settings "
                f"({sorted(cfg.editor_settings)}): name one of them"
            )
    if cfg.trainer.log_every_n_steps < 1:
        raise ValueError(f"trainer.log_every_n_steps must be >= 1, got {cfg.trainer.log_every_n_steps}")
    metric = cfg.get("optimized_metric")
    if metric is not None and metric not in SUMMARY_KEYS:
        raise ValueError(f"optimized_metric={metric!r} is not a summary key; choose one of {SUMMARY_KEYS}")
    return setup


def _callback(spec: DictConfig) -> L.Callback:
    """Instantiate one ``callbacks.<name>``; a setting it refuses surfaces as its own ValueError (naming the
    key), not wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(spec)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise


def make_loggers(cfg: DictConfig, run: RunDir) -> list:
    loggers: list = [MetricsCSVLogger(run.metrics)]
    settings = wandb_settings(cfg, run, job_type="train")
    if settings is not None:
        save_dir = settings.pop("dir")
        wandb_logger = L.pytorch.loggers.WandbLogger(save_dir=save_dir, **settings)
        # Lightning passes wandb.init an `anonymous` setting wandb no longer has (and warns about) -- drop it
        wandb_logger._wandb_init.pop("anonymous", None)
        loggers.append(wandb_logger)
    return loggers


def train(cfg: DictConfig, run_dir: RunDir | Path, console: Console | None = None) -> dict[str, Any]:
    """Train, checkpoint, evaluate on the validation faces; returns the summary (also ``summary.json``)."""
    console = console or Console()
    setup = validate(cfg)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    resume_from = run.checkpoint if (cfg.resume and run.checkpoint.is_file()) else None
    if resume_from is not None:  # refuse a truncated or code-carrying checkpoint before any model loads
        load_weights_only(
            resume_from,
            "checkpoint to resume from",
            f"move it away to start {run.name} over, or pass resume=false or another run_name",
        )

    run.save_config(cfg)  # the resolved config travels with the run (evaluation rebuilds the MDP from it)
    world = build_world(cfg)
    env = LatentAgeEnv(world, setup.env, setup.reward)
    module = SACModule(env, setup.sac)
    console.print(
        f"[bold]agelatent-train[/] {run.name}: {setup.env.action.mode} actions (dim {env.action_dim}), "
        f"obs dim {env.observation_dim}, {setup.env.num_envs} parallel episodes, "
        f"{setup.sac.total_env_steps} env steps on {world.device}"
        + (f"; resuming from {resume_from}" if resume_from else "")
    )
    if setup.demonstrations.enabled and resume_from is None:
        teach(cfg, setup.demonstrations, world, module, run, console)
    loggers = make_loggers(cfg, run)
    wandb_logger = next((lg for lg in loggers if isinstance(lg, L.pytorch.loggers.WandbLogger)), None)
    if wandb_logger is not None:  # plot everything against env steps in W&B
        wandb_logger.experiment.define_metric("env_step")
        wandb_logger.experiment.define_metric("*", step_metric="env_step")
    accelerator = cfg.trainer.accelerator
    trainer = sac_trainer(
        accelerator=("cuda" if world.device.type == "cuda" else "cpu")
        if accelerator == "auto"
        else accelerator,
        logger=loggers,
        callbacks=setup.callbacks,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        default_root_dir=str(run.path),
    )
    start = time.perf_counter()
    steps0 = module.env_steps if resume_from is None else None
    # training-time alignment jitter of the reward's age (perception.age_jitter), never in the report below
    with world.perception.augmentation():
        trainer.fit(module, ckpt_path=resume_from, weights_only=True if resume_from else None)
    seconds = time.perf_counter() - start
    stopped = next((c.stopped_by for c in setup.callbacks if getattr(c, "stopped_by", None)), None)
    if stopped is not None:
        raise JobInterrupted(
            stopped,
            f"stopped at env step {module.env_steps}/{setup.sac.total_env_steps}, checkpoint written to "
            f"{run.checkpoint}; run the same command again to resume from there",
        )

    from agelatent.evaluation.training_report import write_training_report

    summary = write_training_report(
        cfg, run, world, setup.env, run.checkpoint, train_seconds=seconds, env_steps=module.env_steps
    )
    if steps0 is not None and module.env_steps > steps0:
        summary["env_steps_per_s"] = (module.env_steps - steps0) / seconds
    if run.demonstrations.is_file():
        summary["demonstrations"] = json.loads(run.demonstrations.read_text())
    if wandb_logger is not None:
        import wandb

        wandb_logger.experiment.summary.update({f"eval/{k}": v for k, v in summary.items() if _is_number(v)})
        wandb_logger.experiment.log({"eval/edit_grid": wandb.Image(str(run.path / "edit_grid.png"))})
    run.summary.write_text(json.dumps(summary, indent=2))
    console.print(
        f"[bold green]done[/] in {seconds / 60:.1f} min: validation success {summary['success_rate']:.2f}, "
        f"|age error| {summary['age_error']:.1f} y, identity similarity {summary['similarity']:.2f} "
        f"-> {run.path}/summary.md"
    )
    return summary


def teach(
    cfg: DictConfig, settings: DemonstrationsConfig, world, module: SACModule, run: RunDir, console
) -> None:
    """Before SAC (fresh runs only; a resumed run has the result in its weights): the teacher's
    demonstrations on start faces from the run's seed, cloned into the actor and, with
    ``demonstrations.replay``, put into the replay buffer. Writes ``demonstrations.json``."""
    from agelatent.editors import build_editor

    start = time.perf_counter()
    teacher = build_editor(settings.teacher, cfg.editor_settings[settings.teacher])
    demos = collect_demonstrations(world, cfg, teacher, settings, seed=int(cfg.seed))
    collected = time.perf_counter() - start
    fit = behaviour_clone(module.actor, demos, settings, seed=int(cfg.seed))
    if settings.replay:
        module.add_demonstrations(demos)
    report = {
        "teacher": settings.teacher,
        "episodes": demos.episodes,
        "transitions": len(demos),
        "teacher_success_rate": demos.successes / demos.episodes,
        "clipped_action_fraction": demos.clipped,
        "world_calls": demos.world_calls,
        "collect_seconds": collected,
        "clone_seconds": time.perf_counter() - start - collected,
        **{f"clone_{k}": v for k, v in fit.items()},
    }
    run.demonstrations.write_text(json.dumps(report, indent=2))
    console.print(
        f"demonstrations: {demos.episodes} {settings.teacher} episodes ({len(demos)} transitions, teacher "
        f"success {report['teacher_success_rate']:.2f}) in {collected / 60:.1f} min; cloned: action MSE "
        f"{fit['mse']:.4f}, held out {fit['heldout_mse']:.4f} (action variance {fit['action_variance']:.4f})"
    )


def _is_number(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir), train)


if __name__ == "__main__":
    main()
