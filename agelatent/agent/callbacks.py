"""Callbacks of ``agelatent-train`` (``conf/callbacks/``). They find what they need on the trainer and the
module (the run directory is ``Trainer.default_root_dir``, the env is ``SACModule.env``), so the config
instantiates them by name with nothing but their own settings."""

from __future__ import annotations

import os
import tempfile
import time

import lightning as L
import torch
from rich.console import Console

from agelatent.runs import RunDir

__all__ = ["AtomicCheckpoint", "EpisodeMetrics", "PolicySnapshots"]


class AtomicCheckpoint(L.Callback):
    """``checkpoints/last.ckpt`` every ``every_n_steps`` batched env steps and at the end, via temp file +
    rename, so an interrupted write never replaces a good checkpoint with a truncated one."""

    def __init__(self, every_n_steps: int) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.checkpoint.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def save(self, trainer: L.Trainer) -> None:
        path = RunDir(trainer.default_root_dir).checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".last-", suffix=".tmp")
        os.close(fd)
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.every_n_batched_steps(self.every_n_steps):
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)


class PolicySnapshots(L.Callback):
    """The actor every ``every_env_steps`` env steps, as ``checkpoints/policy_<env steps>.pt`` (a few hundred
    kB each, in the checkpoint's own layout, so every ``policy=`` path accepts it): what learning curves
    evaluate. Snapshots already on disk (a resumed run) are kept."""

    def __init__(self, every_env_steps: int) -> None:
        if every_env_steps < 1:
            raise ValueError(
                f"callbacks.policy_snapshots.every_env_steps must be >= 1, got {every_env_steps}"
            )
        self.every_env_steps = every_env_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps, every, width = pl_module.env_steps, self.every_env_steps, pl_module.env.num_envs
        if steps // every > (steps - width) // every:  # this batched step crossed a multiple of `every`
            path = RunDir(trainer.default_root_dir).snapshot(steps)
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {f"actor.{k}": v.detach().cpu() for k, v in pl_module.actor.state_dict().items()}
            payload = {"hyper_parameters": dict(pl_module.hparams), "state_dict": state, "env_steps": steps}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".policy-", suffix=".tmp")
            os.close(fd)
            torch.save(payload, tmp)
            os.replace(tmp, path)


class EpisodeMetrics(L.Callback):
    """Logs the env's finished-episode statistics (``episodes/*``: success rate, identity loss, age error,
    similarity) every ``Trainer.log_every_n_steps`` batched steps and prints a progress line at most every
    ``print_every_s`` seconds."""

    def __init__(self, print_every_s: float, console: Console | None = None) -> None:
        self.print_every_s = print_every_s
        self.console = console or Console()
        self._last_print = 0.0
        self._start = (0.0, 0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.perf_counter(), pl_module.env_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = pl_module.cfg.total_env_steps
        if not (pl_module.logging_due() or pl_module.env_steps >= total):
            return
        stats = pl_module.env.episode_metrics()
        if stats:
            pl_module.log_metrics({f"episodes/{k}": v for k, v in stats.items()})
        now = time.perf_counter()
        if now - self._last_print > self.print_every_s or pl_module.env_steps >= total:
            self._last_print = now
            t0, s0 = self._start
            rate = (pl_module.env_steps - s0) / max(now - t0, 1e-9)
            eta = (total - pl_module.env_steps) / max(rate, 1e-9)
            msg = f"env step {pl_module.env_steps:>7}/{total} ({rate:5.1f}/s, ETA {eta / 60:4.1f} min)"
            if stats:
                msg += (
                    f" | success {stats['success']:.2f} identity lost {stats['identity_lost']:.2f}"
                    f" |age err| {stats['age_error']:.1f} sim {stats['similarity']:.2f}"
                )
            self.console.print(msg)
