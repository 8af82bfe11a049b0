"""Callbacks of ``agelatent-train`` (``conf/callbacks/``). They find what they need on the trainer and the
module (the run directory is ``Trainer.default_root_dir``, the env is ``SACModule.env``), so the config
instantiates them by name with nothing but their own settings."""

from __future__ import annotations

import math
import signal
import threading
import time

import lightning as L
import torch
from rich.console import Console

from agelatent.runs import RunDir, write_atomically

__all__ = ["AtomicCheckpoint", "EpisodeMetrics", "PolicySnapshots"]


class AtomicCheckpoint(L.Callback):
    """``checkpoints/last.ckpt`` every ``every_n_steps`` batched env steps, every ``every_minutes`` minutes,
    at the end, and when the run is asked to stop: written atomically and durably
    (:func:`~agelatent.runs.write_atomically`), so an interrupted write never replaces a good checkpoint.

    SIGINT, SIGTERM (what Ctrl-C, ``timeout`` and SLURM pre-emption send) and SIGUSR2 (what SLURM sends
    ahead of a job's time limit when the submitit launcher asks it to) are caught while training: the
    batched step under way finishes, the checkpoint is written, training stops and :attr:`stopped_by` holds
    the signal (``agelatent-train`` then hands it on to the handler that was in place before training, a
    launcher's, and exits with ``128 + signum``; running it again resumes from the same env step). A second
    signal while stopping gets the default behaviour (it kills)."""

    STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self, every_n_steps: int, every_minutes: float | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.checkpoint.every_n_steps must be >= 1, got {every_n_steps}")
        if every_minutes is not None and not (math.isfinite(every_minutes) and every_minutes > 0):
            raise ValueError(
                f"callbacks.checkpoint.every_minutes must be a number of minutes > 0 (or null: none), "
                f"got {every_minutes!r}"
            )
        self.every_n_steps = every_n_steps
        self.every_minutes = every_minutes
        self.stopped_by: int | None = None
        self._signalled: int | None = None
        self._saved_at = (-1, time.monotonic())  # (env steps, when) of the newest write
        self._previous_handlers: dict[int, object] = {}

    @property
    def signalled(self) -> int | None:
        """The stop signal caught during this training (it stops training at the end of the step under way)."""
        return self._signalled

    def save(self, trainer: L.Trainer) -> None:
        path = RunDir(trainer.default_root_dir).checkpoint
        write_atomically(path, lambda tmp: trainer.save_checkpoint(tmp, weights_only=False))
        self._saved_at = (trainer.lightning_module.env_steps, time.monotonic())

    # ---- signals --------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame) -> None:
        self._signalled = signum
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in a launcher thread)
        for sig in self.STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    # ---- hooks -----------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self.stopped_by, self._signalled = None, None
        self._saved_at = (pl_module.env_steps, time.monotonic())
        self._install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        minutes = (time.monotonic() - self._saved_at[1]) / 60
        if (
            pl_module.every_n_batched_steps(self.every_n_steps)
            or (self.every_minutes is not None and minutes >= self.every_minutes)
            or self._signalled is not None
        ):
            self.save(trainer)
        if self._signalled is not None:
            self.stopped_by = self._signalled
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self._saved_at[0] != pl_module.env_steps:
            self.save(trainer)
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()  # the newest checkpoint stays as it was: a half-done step is never saved


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
            state = {f"actor.{k}": v.detach().cpu() for k, v in pl_module.actor.state_dict().items()}
            payload = {"hyper_parameters": dict(pl_module.hparams), "state_dict": state, "env_steps": steps}
            write_atomically(path, lambda tmp: torch.save(payload, tmp))


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
