"""``agelatent-train``: SAC on the latent age-editing MDP. ``make train`` runs the default config.

The run directory (``runs/<run_name>/``, Hydra's output dir) ends up holding:

* ``checkpoints/last.ckpt`` — actor, critics, targets, optimisers, entropy coefficient, counters; written
  atomically (temp file + rename) every ``checkpoint_every_n_steps`` batched steps and at the end. Running
  again with the same ``run_name`` resumes from it with the same env-step counter.
* ``metrics.csv`` — every logged metric against ``env_step`` (Lightning's CSV logger).
* ``wandb/offline-run-*`` — the same run for Weights & Biases (``wandb sync`` uploads it).
* ``edit_grid.png`` — held-out faces (rows) edited towards each evaluation target (columns).
* ``summary.md`` / ``eval.csv`` — success rate, age error and identity similarity on the held-out faces.
* ``config.yaml`` — the resolved config (``.hydra/`` also holds Hydra's overrides when run from the CLI).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import secrets
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers.csv_logs import CSVLogger, ExperimentWriter
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from agelatent.agent.sac import SACConfig, SACModule, sac_trainer
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.rewards import Reward
from agelatent.jobs import CONFIG_DIR, git_commit
from agelatent.world import build_world

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.ckpt"


# ---- configuration ---------------------------------------------------------------------------------------
def env_config(cfg: DictConfig) -> LatentAgeEnvConfig:
    """The env's dataclass config from the ``env``, ``action``, ``identity`` and ``target`` groups (validated)."""
    d = OmegaConf.to_container(cfg.env, resolve=True)
    for key in ("action", "identity", "target"):
        d[key] = OmegaConf.to_container(cfg[key], resolve=True)
    return LatentAgeEnvConfig.from_dict(d)


def sac_config(cfg: DictConfig) -> SACConfig:
    d = OmegaConf.to_container(cfg.agent, resolve=True)
    d["seed"] = int(cfg.seed)
    return SACConfig(**d)


def build_reward(cfg: DictConfig) -> Reward:
    terms = {}
    for name, term in (cfg.reward.terms or {}).items():
        if term is None:
            continue
        try:
            terms[name] = instantiate(term)
        except InstantiationException as err:  # report the term's own message, not Hydra's wrapper
            cause = err.__cause__ or err
            raise ValueError(f"reward.terms.{name}: {cause}") from err
    return Reward(terms)


def validate(cfg: DictConfig) -> tuple[LatentAgeEnvConfig, SACConfig, Reward]:
    """Every config error surfaces here, before any model is loaded."""
    env_cfg, sac_cfg, reward = env_config(cfg), sac_config(cfg), build_reward(cfg)
    ev = cfg.eval
    if ev.num_faces < 1 or not ev.targets or not 1 <= ev.grid_faces <= ev.num_faces:
        raise ValueError(
            f"eval needs num_faces >= 1, a non-empty targets list and 1 <= grid_faces <= num_faces; got "
            f"num_faces={ev.num_faces}, targets={list(ev.targets)}, grid_faces={ev.grid_faces}"
        )
    bad = [t for t in ev.targets if not 0 <= t <= 80]
    if bad:
        raise ValueError(f"eval.targets must be ages in the age model's range [0, 80], got {bad}")
    if cfg.log_every_n_steps < 1 or cfg.checkpoint_every_n_steps < 1:
        raise ValueError("log_every_n_steps and checkpoint_every_n_steps must be >= 1")
    return env_cfg, sac_cfg, reward


# ---- callbacks -------------------------------------------------------------------------------------------
class AtomicCheckpoint(L.Callback):
    """``last.ckpt`` every ``every_n_steps`` batched env steps and at the end, via temp file + rename, so an
    interrupted write never replaces a good checkpoint with a truncated one."""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path, self.every_n_steps = path, every_n_steps

    def save(self, trainer: L.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".last-", suffix=".tmp")
        os.close(fd)
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)


class EpisodeMetrics(L.Callback):
    """Logs the env's finished-episode statistics (success rate, identity loss, age error, similarity) and
    shows progress on the console."""

    def __init__(self, env: LatentAgeEnv, every_n_steps: int, console: Console, total: int) -> None:
        self.env, self.every_n_steps, self.console, self.total = env, every_n_steps, console, total
        self._last_print = 0.0
        self._start = (0.0, 0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.perf_counter(), pl_module.env_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.every_n_steps:
            return
        stats = self.env.episode_metrics()
        if stats:
            pl_module.log_dict(
                {f"episodes/{k}": float(v) for k, v in stats.items()}
                | {"env_step": float(pl_module.env_steps)},
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )
        now = time.perf_counter()
        if now - self._last_print > 15 or pl_module.env_steps >= self.total:
            self._last_print = now
            t0, s0 = self._start
            rate = (pl_module.env_steps - s0) / max(now - t0, 1e-9)
            eta = (self.total - pl_module.env_steps) / max(rate, 1e-9)
            msg = f"env step {pl_module.env_steps:>7}/{self.total} ({rate:5.1f}/s, ETA {eta / 60:4.1f} min)"
            if stats:
                msg += (
                    f" | success {stats['success']:.2f} identity lost {stats['identity_lost']:.2f}"
                    f" |age err| {stats['age_error']:.1f} sim {stats['similarity']:.2f}"
                )
            self.console.print(msg)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a resumed run must append to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """``<run dir>/metrics.csv``, continued (not overwritten) when the run resumes."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def make_loggers(cfg: DictConfig, run_dir: Path, run_name: str) -> list:
    loggers: list = [ResumableCSVLogger(run_dir, name="", version="")]
    if cfg.wandb.mode != "disabled":
        group = cfg.wandb.group
        if group is None:
            group = Path(HydraConfig.get().sweep.dir).name if _is_multirun() else run_name
        name = f"{group}-{run_name}" if _is_multirun() else run_name  # multirun job dirs are numbered
        loggers.append(
            L.pytorch.loggers.WandbLogger(
                name=name,
                save_dir=str(run_dir),
                project=cfg.wandb.project,
                group=group,
                tags=[f"commit:{git_commit()}", *cfg.wandb.tags],
                offline=cfg.wandb.mode == "offline",
                config=OmegaConf.to_container(cfg, resolve=True),
                id=_wandb_id(run_dir),
                resume="allow",
            )
        )
    return loggers


def _wandb_id(run_dir: Path) -> str:
    """A stable W&B run id per run directory, so a resumed run continues the same W&B run."""
    path = run_dir / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return run_id


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False


# ---- the job ---------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """Train, checkpoint, evaluate; returns the evaluation summary. ``run_dir`` receives every artefact."""
    console = console or Console()
    env_cfg, sac_cfg, reward = validate(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(run_dir)
    run_name = run_dir.name
    ckpt = run_dir / "checkpoints" / CHECKPOINT_NAME
    resume_from = ckpt if (cfg.resume and ckpt.is_file()) else None

    run_dir.mkdir(parents=True, exist_ok=True)
    # the resolved config travels with the run (evaluation rebuilds the policy's MDP from it)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    world = build_world(cfg)
    env = LatentAgeEnv(world, env_cfg, reward)
    module = SACModule(env, sac_cfg)
    console.print(
        f"[bold]agelatent-train[/] {run_name}: {env_cfg.action.mode} actions (dim {env.action_dim}), "
        f"obs dim {env.observation_dim}, {env_cfg.num_envs} parallel episodes, "
        f"{sac_cfg.total_env_steps} env steps on {world.device}"
        + (f"; resuming from {resume_from}" if resume_from else "")
    )
    loggers = make_loggers(cfg, run_dir, run_name)
    for lg in loggers:
        if isinstance(lg, L.pytorch.loggers.WandbLogger):  # plot everything against env steps in W&B
            lg.experiment.define_metric("env_step")
            lg.experiment.define_metric("*", step_metric="env_step")
    trainer = sac_trainer(
        accelerator="cuda" if world.device.type == "cuda" else "cpu",
        logger=loggers,
        callbacks=[
            AtomicCheckpoint(ckpt, cfg.checkpoint_every_n_steps),
            EpisodeMetrics(env, cfg.log_every_n_steps, console, sac_cfg.total_env_steps),
        ],
        log_every_n_steps=cfg.log_every_n_steps,
    )
    start = time.perf_counter()
    steps0 = module.env_steps if resume_from is None else None
    trainer.fit(module, ckpt_path=resume_from, weights_only=True if resume_from else None)
    seconds = time.perf_counter() - start
    steps_done = module.env_steps - (steps0 or 0) if steps0 is not None else None

    from agelatent.evaluation.training_report import write_training_report

    summary = write_training_report(
        cfg, run_dir, world, env_cfg, reward, ckpt, train_seconds=seconds, env_steps=module.env_steps
    )
    if steps_done:
        summary["env_steps_per_s"] = steps_done / seconds
    wandb_logger = next((lg for lg in loggers if isinstance(lg, L.pytorch.loggers.WandbLogger)), None)
    if wandb_logger is not None:
        import wandb

        wandb_logger.experiment.summary.update({f"eval/{k}": v for k, v in summary.items() if _is_number(v)})
        wandb_logger.experiment.log({"eval/edit_grid": wandb.Image(str(run_dir / "edit_grid.png"))})
        wandb_logger.experiment.finish()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"[bold green]done[/] in {seconds / 60:.1f} min: held-out success {summary['success_rate']:.2f}, "
        f"|age error| {summary['age_error']:.1f} y, identity similarity {summary['similarity']:.2f} "
        f"-> {run_dir}/summary.md"
    )
    return summary


def _is_number(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except Exception:
        # in a multirun the other jobs go on; this file records why this one failed
        (run_dir / "FAILED.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
