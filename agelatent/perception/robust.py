"""The robust age reading: the age network's expectation over a family of image transforms that keep natural
age differences between faces (randomised smoothing / an expectation over transformations).

An age change that lives in the age network's blind spots -- pixels no person would call age -- does not
survive the transforms' average, while the natural differences between unedited faces mostly do. The reading
is differentiable (the transforms are), so its gradient can drive editors too. Its family and strength are
chosen on unedited faces (``experiments/robust_age.py``: the strongest setting whose reading still correlates
>= 0.9 with the clean one across natural faces and keeps its slope) and configured per perception as
``perception.robust_age``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from agelatent.perception.transforms import ImageTransform

__all__ = ["RobustReading"]


@dataclass
class RobustReading:
    """Each of ``draws`` draws applies every transform of ``transforms`` in order (a composition) and reads
    the result; the reading is the mean over draws. Random transforms draw from a CPU generator seeded with
    ``seed`` and advanced by every call (a fixed noise pattern would itself be a blind spot to find)."""

    transforms: tuple[ImageTransform, ...]
    draws: int
    seed: int
    #: the reading on the clean reading's scale: (mean over draws - intercept) / slope, with the line the
    #: least-squares fit of the raw robust reading on the clean one across unedited faces
    #: (``experiments/robust_age.py`` prints it per candidate). Defaults: the raw mean.
    intercept: float = 0.0
    slope: float = 1.0

    def __post_init__(self) -> None:
        if not self.transforms:
            raise ValueError(
                "perception.robust_age.transforms is empty: give at least one transform, or robust_age: null"
            )
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ValueError(f"perception.robust_age.draws must be an integer >= 1, got {self.draws!r}")
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise ValueError(
                "perception.robust_age.slope must be a finite number > 0 and intercept finite (the line of the "
                f"raw robust reading on the clean one), got slope {self.slope!r}, intercept {self.intercept!r}"
            )
        self._generator = torch.Generator().manual_seed(int(self.seed))

    @classmethod
    def from_config(cls, spec: Mapping | None) -> RobustReading | None:
        """``perception.robust_age`` (``transforms``: name -> kind, strength; ``draws``; ``seed``; optionally
        ``intercept`` and ``slope``) or None."""
        if not spec:
            return None
        transforms = []
        for name, t in dict(spec.get("transforms") or {}).items():
            try:
                transforms.append(ImageTransform(**dict(t)))
            except (TypeError, ValueError) as err:
                raise ValueError(f"perception.robust_age.transforms.{name}: {err}") from None
        line = {k: float(spec[k]) for k in ("intercept", "slope") if spec.get(k) is not None}
        return cls(tuple(transforms), spec.get("draws", 1), spec.get("seed", 0), **line)

    def __call__(self, read: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        readings = []
        for _ in range(self.draws):
            x = images
            for t in self.transforms:
                x = t(x, self._generator)
            readings.append(read(x))
        return (torch.stack(readings).mean(0) - self.intercept) / self.slope
