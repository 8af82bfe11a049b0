"""Target-age conditioning: absolute ages in a range, or relative changes of ±Δ years from the start age."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("absolute", "relative")


@dataclass(frozen=True)
class TargetConfig:
    mode: str = "absolute"
    min_age: float = 20.0  # absolute: targets uniform in [min_age, max_age]; relative: the clip range
    max_age: float = 60.0
    min_delta: float = 5.0  # relative: |Δ| uniform in [min_delta, max_delta], sign random
    max_delta: float = 20.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"target.mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.min_age <= self.max_age <= 80:
            raise ValueError(
                f"target ages must satisfy 0 <= min_age <= max_age <= 80 (the age model's range), "
                f"got min_age={self.min_age}, max_age={self.max_age}"
            )
        if not 0 <= self.min_delta <= self.max_delta <= 80:
            raise ValueError(
                f"relative targets must satisfy 0 <= min_delta <= max_delta <= 80, "
                f"got min_delta={self.min_delta}, max_delta={self.max_delta}"
            )

    def sample(self, start_ages: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Targets ``[B]`` for episodes starting at ``start_ages`` (relative targets are clipped to
        ``[min_age, max_age]``)."""
        u = torch.rand(len(start_ages), generator=generator).to(start_ages.device)
        if self.mode == "absolute":
            return self.min_age + (self.max_age - self.min_age) * u
        sign = torch.where(torch.rand(len(start_ages), generator=generator) < 0.5, -1.0, 1.0).to(u.device)
        delta = self.min_delta + (self.max_delta - self.min_delta) * u
        return (start_ages + sign * delta).clamp(self.min_age, self.max_age)
