"""Run directories and the job guard every entry point runs inside.

A run directory (``runs/<run_name>/`` for training, ``results/eval/<name>/`` for an evaluation, ...) is
described once, by :class:`RunDir`; nothing else spells its file names. :func:`run_job` is the one place
that seeds a job, records a failure (``FAILED.txt``), clears a stale failure after a success, finishes the
W&B run whatever happened, and hands a sweeper the metric it optimises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agelatent.config import CONFIG_DIR

__all__ = [
    "JobInterrupted",
    "RunDir",
    "RunInUseError",
    "git_commit",
    "is_multirun",
    "run_job",
    "wandb_settings",
    "write_atomically",
]


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Replace ``path`` by what ``write(tmp)`` writes to a temporary file beside it, atomically and durably:
    the temp file is fsynced, renamed over ``path``, and the directory fsynced, so a crash or power loss at
    any point leaves either the old file or the new one whole -- never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class RunInUseError(RuntimeError):
    """Another live process holds this run directory (:meth:`RunDir.lock`)."""


class JobInterrupted(Exception):
    """A job stopped by a signal (SIGINT, or SIGTERM from ``timeout``, SLURM pre-emption, ...) after saving
    what lets it resume. :func:`run_job` records it and exits with status ``128 + signum``, no traceback."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class _File:
    """A file of the run directory, at a fixed path inside it: ``RunDir(...).<name>`` is that path."""

    def __init__(self, relative: str, doc: str) -> None:
        self.relative, self.__doc__ = relative, doc

    def __get__(self, run: RunDir | None, owner: type | None = None):
        return self if run is None else run.path / self.relative


@dataclass(frozen=True)
class RunDir:
    """The files of one job's output directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    #: the files every job's directory may hold
    checkpoint = _File(
        "checkpoints/last.ckpt", "The training state to resume from and to evaluate (written atomically)."
    )
    config = _File(
        "config.yaml", "The resolved config the job ran with (evaluation rebuilds a policy's MDP from it)."
    )
    failed = _File(
        "FAILED.txt", "Present only while the job's last attempt failed: the error and its traceback."
    )
    summary = _File("summary.json", "The job's result as JSON (training: the validation summary).")
    metrics = _File("metrics.csv", "Training curves, one row per logging step (appended to on resume).")
    demonstrations = _File(
        "demonstrations.json", "What the teacher's demonstrations cost and how well the actor cloned them."
    )
    wandb_id = _File("wandb_id.txt", "The W&B run id, so that a resumed job continues the same W&B run.")

    def snapshot(self, env_steps: int) -> Path:
        """The policy as it was after ``env_steps`` env steps (actor only; loads like a checkpoint)."""
        return self.path / "checkpoints" / f"policy_{int(env_steps):08d}.pt"

    def snapshots(self) -> list[tuple[int, Path]]:
        """(env steps, path) of every policy snapshot, in training order."""
        found = sorted((self.path / "checkpoints").glob("policy_*.pt"))
        return [(int(p.stem.removeprefix("policy_")), p) for p in found]

    @classmethod
    def of_policy(cls, policy: str | Path) -> tuple[RunDir, Path]:
        """``policy`` = a training run directory or a checkpoint inside one -> (run dir, checkpoint)."""
        path = Path(policy)
        if path.is_dir():
            run = cls(path)
            ckpt = run.checkpoint
        else:
            ckpt = path
            run = cls(path.parent.parent)
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"policy={policy}: no checkpoint at {ckpt}; pass a training run directory (runs/<name>) or "
                "its checkpoints/last.ckpt, or drop sac_policy from editors"
            )
        return run, ckpt

    def load_config(self) -> DictConfig | None:
        return OmegaConf.load(self.config) if self.config.is_file() else None  # type: ignore[return-value]

    def save_config(self, cfg: DictConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, self.config, resolve=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process (an exclusive ``flock`` on ``.lock`` inside it, released
        when the block ends or the process dies): a second job on the same directory fails at once with
        :class:`RunInUseError` instead of interleaving its checkpoints, metrics and W&B run with the first."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunInUseError(
                    f"{self.path} is in use by {holder}; wait for that job to end, or give this one another "
                    "run_name"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has_failed(self) -> bool:
        """True when the last attempt failed or never produced a checkpoint."""
        return self.failed.is_file() or not self.checkpoint.is_file()

    def stable_wandb_id(self) -> str:
        if self.wandb_id.is_file():
            return self.wandb_id.read_text().strip()
        run_id = secrets.token_hex(4)
        self.path.mkdir(parents=True, exist_ok=True)
        self.wandb_id.write_text(run_id)
        return run_id


def run_job(
    cfg: DictConfig,
    run_dir: RunDir | Path,
    task: Callable[[DictConfig, RunDir], Mapping[str, Any] | None],
) -> float | None:
    """Run ``task(cfg, run_dir)`` as a job: the guard every entry point (train, eval, sample, tables) uses.

    * holds the run directory (:meth:`RunDir.lock`): a second job on it fails with :class:`RunInUseError`
      and touches nothing;
    * seeds Python, NumPy and torch from ``cfg.seed`` and sets ``cfg.threads`` torch threads when given;
    * on an exception writes ``FAILED.txt`` (error + traceback) and re-raises, so a multirun records the
      failed job and goes on with the others;
    * on :class:`JobInterrupted` (a signal, after the job saved its state) writes ``FAILED.txt`` saying so
      and how to resume, prints that line, hands the signal on to a launcher's handler (submitit requeues a
      SLURM job that way) and exits with status ``128 + signum`` (no traceback);
    * on success removes a ``FAILED.txt`` left by an earlier attempt (a resumed run that now succeeds);
    * finishes the W&B run either way (exit code 1 after a failure);
    * returns ``task``'s value of ``cfg.optimized_metric`` (when set) for a Hydra sweeper to optimise.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    with run.lock():  # a second job on this directory fails here, before it writes anything
        return _run_locked(cfg, run, task)


def _run_locked(cfg: DictConfig, run: RunDir, task) -> float | None:
    import lightning as L
    import torch

    metric = cfg.get("optimized_metric")
    ok = False
    try:
        if cfg.get("seed") is not None:
            L.seed_everything(int(cfg.seed), verbose=False)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        result = task(cfg, run) or {}
        if metric is not None and metric not in result:
            raise KeyError(
                f"optimized_metric={metric!r} is not among the job's results {sorted(result)}; pick one of those"
            )
        ok = True
    except JobInterrupted as stop:
        run.path.mkdir(parents=True, exist_ok=True)
        run.failed.write_text(f"interrupted by {stop.signal_name}: {stop}\n")
        print(f"{run.name}: interrupted by {stop.signal_name}: {stop}", file=sys.stderr, flush=True)
        from agelatent.cluster import pass_on_stop_signal

        pass_on_stop_signal(stop.signum)
        raise SystemExit(128 + stop.signum) from None
    except BaseException:
        run.path.mkdir(parents=True, exist_ok=True)
        run.failed.write_text(traceback.format_exc())
        raise
    finally:
        _finish_wandb(0 if ok else 1)
    run.failed.unlink(missing_ok=True)
    if metric is None:
        return None
    return float(result[metric])


def _finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # never import it just to finish nothing
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def git_commit() -> str:
    """Short commit of the checkout the configs come from ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=CONFIG_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def is_multirun() -> bool:
    """True inside a Hydra multirun job (a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:  # not under Hydra (a notebook, a test calling the job function directly)
        return False


def wandb_settings(cfg: DictConfig, run: RunDir, *, job_type: str) -> dict[str, Any] | None:
    """``wandb.init`` keyword arguments for this job, or None when ``cfg.logger`` asks for no W&B run.

    Runs are grouped per sweep (the sweep directory's name) unless ``logger.wandb.group`` says otherwise,
    tagged with the commit, carry the resolved config, and keep one id per run directory so that a resumed
    job continues its W&B run.
    """
    wb = cfg.logger.get("wandb") if cfg.get("logger") is not None else None
    # logger=none leaves `wandb` null, or holding only what an entry point's own config sets on top of it
    # (eval.yaml's `group`), without a mode: no W&B run either way
    if wb is None or wb.get("mode") in (None, "disabled"):
        return None
    import wandb

    multirun = is_multirun()
    group = wb.group
    if group is None:
        from hydra.core.hydra_config import HydraConfig

        group = Path(HydraConfig.get().sweep.dir).name if multirun else run.name
    return {
        "project": wb.project,
        "group": group,
        "name": f"{group}-{run.name}" if multirun else run.name,  # multirun job dirs are numbered
        "dir": str(run.path),
        "mode": wb.mode,
        "tags": [f"commit:{git_commit()}", *wb.tags],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "id": run.stable_wandb_id(),
        "resume": "allow",
        "job_type": job_type,
        # one line saying where the run is saved, not a history and summary dump at the end
        "settings": wandb.Settings(quiet=True),
    }
