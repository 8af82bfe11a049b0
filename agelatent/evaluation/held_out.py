"""Held-out edits: the faces x target ages a protocol (``conf/protocol/``) evaluates on.

The faces are generator seeds ``protocol.first_seed .. first_seed + num_faces - 1``: validation seeds for
what training reports and hyperparameter search optimise, test seeds for agelatent-eval and the tables
(``conf/splits/``). Training draws its start faces from its own RNG stream, never from these seeds.
"""

from __future__ import annotations

import torch

__all__ = ["check_protocol", "held_out_edits"]


def check_protocol(protocol, age_range: tuple[float, float], where: str) -> None:
    """Raise a ValueError naming the key when the protocol cannot run (before any model loads)."""
    lo, hi = age_range
    if protocol.num_faces < 1 or not protocol.targets:
        raise ValueError(
            f"{where}.num_faces must be >= 1 and {where}.targets non-empty, got {protocol.num_faces} and "
            f"{list(protocol.targets)}"
        )
    for key in ("grid_faces", "sheet_faces"):
        if getattr(protocol, key) < 1:
            raise ValueError(
                f"{where}.{key} must be >= 1 (at most num_faces are shown), got {getattr(protocol, key)}"
            )
    bad = [t for t in protocol.targets if not lo <= t <= hi]
    if bad:
        raise ValueError(f"{where}.targets must be ages in the age model's range [{lo:g}, {hi:g}], got {bad}")
    if not protocol.success_window_years > 0:
        raise ValueError(f"{where}.success_window_years must be > 0, got {protocol.success_window_years}")


def held_out_edits(world, protocol) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every protocol face paired with every target, face-major: (start latents ``[F*T, d]``, targets
    ``[F*T]``, the seed of each edit)."""
    targets = [float(t) for t in protocol.targets]
    seeds = list(range(protocol.first_seed, protocol.first_seed + protocol.num_faces))
    latents = world.sample_latents(seeds).repeat_interleave(len(targets), dim=0)
    target_t = torch.tensor(targets, device=latents.device).repeat(len(seeds))
    return latents, target_t, [s for s in seeds for _ in targets]
