"""SLURM, as the sweeps meet it (``hydra/launcher=slurm``): the check that a controller answers before a
sweep submits anything, so that a missing cluster is one clear line instead of submitit's retries; and what
a job stopped by a signal does once its checkpoint is written (requeue itself, or not)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["SlurmUnavailable", "check_controller", "pass_on_stop_signal", "slurm_job_state"]

#: what to do about a missing cluster, said by every error below
FIX = (
    "run `make slurm-up` (as root) for a single-node cluster on this machine, "
    "or point SLURM_CONF at your cluster's slurm.conf"
)


class SlurmUnavailable(RuntimeError):
    """No SLURM to submit to: no client on PATH, no slurm.conf, or no slurmctld answering."""


def check_controller(timeout_s: float = 20) -> None:
    """Raise :class:`SlurmUnavailable`, naming the problem and the fix, unless ``scontrol ping`` says the
    controller of this machine's SLURM (``SLURM_CONF``, else the client's compiled-in slurm.conf) is up."""
    missing = [cmd for cmd in ("sbatch", "scontrol", "sacct") if shutil.which(cmd) is None]
    if missing:
        raise SlurmUnavailable(f"no SLURM client here ({', '.join(missing)} not on PATH): {FIX}")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        raise SlurmUnavailable(f"SLURM_CONF={conf} is not a file: {FIX}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(
            f"no slurmctld answers (`scontrol ping` gave no answer in {timeout_s:.0f} s; "
            f"is there a slurm.conf?): {FIX}"
        ) from None
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        said = (ping.stdout.strip().splitlines() or ping.stderr.strip().splitlines() or ["nothing"])[0]
        raise SlurmUnavailable(f"no slurmctld answers (`scontrol ping`: {said}): {FIX}")


def slurm_job_state(timeout_s: float = 30) -> str:
    """This SLURM job's state as the controller sees it (``RUNNING``, ``COMPLETING``, ...; ``UNKNOWN`` when
    the controller does not say)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%T"],
            capture_output=True, text=True, timeout=timeout_s,
        ).stdout.split()  # fmt: skip
    except (KeyError, OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    return out[0] if out else "UNKNOWN"


def pass_on_stop_signal(signum: int) -> None:
    """Once a job stopped by ``signum`` has written its checkpoint, hand the signal to whoever runs the job.

    In a SLURM job of the submitit launcher, a stop that should not end the job requeues it, through
    submitit's requeue handler (its handler for SIGUSR2), so that its next run resumes from the checkpoint:

    * SIGUSR2, SLURM's warning ahead of the time limit: always;
    * SIGTERM while SLURM still has the job RUNNING -- pre-emption with a grace time, or
      ``scancel --signal=TERM``: SLURM requeues only the jobs it kills itself, and this one ends on its own
      before its grace time is up. A job being cancelled (``scancel``) or requeued by SLURM itself
      (``scontrol requeue``, pre-emption without a grace time) is COMPLETING instead: it is left to SLURM.

    Elsewhere a launcher's own handler for the signal is called, if there is one; the defaults (terminate,
    KeyboardInterrupt) are not: the job exits with ``128 + signum`` instead."""
    handler = signal.getsignal(signum)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and signum in (signal.SIGTERM, signal.SIGUSR2):
        if signum == signal.SIGTERM and (state := slurm_job_state()) != "RUNNING":
            print(
                f"not requeued: SLURM has this job {state} (cancelled, or requeued by SLURM)", file=sys.stderr
            )
            return
        handler = signal.getsignal(signal.SIGUSR2)
    if not callable(handler) or handler is signal.default_int_handler:
        return
    try:
        handler(signum, None)
    except subprocess.SubprocessError as error:  # submitit's `scontrol requeue` failed
        print(f"not requeued: {error}", file=sys.stderr, flush=True)
