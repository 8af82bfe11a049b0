"""Target-age conditioning: absolute ages in a range, or relative changes of ±Δ years from the start age."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("absolute", "relative")


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    """Values: ``conf/target/``. The age bounds are checked against the perception's ``age_range`` by
    :meth:`check_age_range` (the env does it when it is built; configs are checked before models load)."""

    mode: str
    min_age: float  # absolute: targets uniform in [min_age, max_age]; relative: the clip range
    max_age: float
    min_delta: float  # relative: |Δ| uniform in [min_delta, max_delta], sign random
    max_delta: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"target.mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.min_age <= self.max_age:
            raise ValueError(
                f"target ages must satisfy 0 <= min_age <= max_age, got min_age={self.min_age}, "
                f"max_age={self.max_age}"
            )
        if not 0 <= self.min_delta <= self.max_delta:
            raise ValueError(
                f"relative targets must satisfy 0 <= min_delta <= max_delta, "
                f"got min_delta={self.min_delta}, max_delta={self.max_delta}"
            )

    def check_age_range(self, age_range: tuple[float, float]) -> None:
        """Raise unless every target this config can draw lies in the age model's ``age_range``."""
        lo, hi = age_range
        if not lo <= self.min_age <= self.max_age <= hi:
            raise ValueError(
                f"target ages must lie in the age model's range [{lo:g}, {hi:g}], got min_age={self.min_age}, "
                f"max_age={self.max_age}: change target.min_age / target.max_age"
            )
        if self.max_delta > hi - lo:
            raise ValueError(
                f"target.max_delta={self.max_delta} exceeds the age model's whole range [{lo:g}, {hi:g}]"
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
