"""SLURM, as the sweeps meet it (``hydra/launcher=slurm``): the check that a controller answers before a
sweep submits anything, so that a missing cluster is one clear line instead of submitit's retries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["SlurmUnavailable", "check_controller"]

#: what to do about a missing cluster, said by every error below
FIX = "run `make slurm-up` (as root) for a single-node cluster on this machine, or point SLURM_CONF at your cluster's slurm.conf"


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
            f"no slurmctld answers (`scontrol ping` gave no answer in {timeout_s:.0f} s; is there a slurm.conf?): {FIX}"
        ) from None
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        said = (ping.stdout.strip().splitlines() or ping.stderr.strip().splitlines() or ["nothing"])[0]
        raise SlurmUnavailable(f"no slurmctld answers (`scontrol ping`: {said}): {FIX}")
