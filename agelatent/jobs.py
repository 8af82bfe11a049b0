"""What every entry point shares: where the Hydra configs live and how a device is chosen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

#: Hydra config root (the repository's top-level ``conf/``).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else CPU; anything else must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name!r} requested but CUDA is not available; use device=cpu or device=auto"
        )
    return device


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = ()):
    """The config a console script would run with (``conf/<name>.yaml`` + Hydra overrides), for notebooks and
    tests. Hydra's ``${now:...}`` and ``hydra.*`` keys are left unresolved."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose(name, overrides=list(overrides))


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
