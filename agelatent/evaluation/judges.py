"""Second evaluators ("judges"): each reads the same edits from outside the reward and adds its columns
``<name>/<metric>`` to the results table. One interface, one class per ``kind`` (``conf/evaluator/``):

* ``perception`` (:class:`PerceptionJudge`: ``realigned``, ``onnx_age``): start and final faces re-scored by
  a second perception -- success, age error and similarity as it sees them;
* ``independent_age`` (:class:`IndependentAgeJudge`: ``agender``): an age model with its own scale --
  direction agreement and the confirmation ratio (:mod:`agelatent.evaluation.independent`);
* ``realness`` (:class:`RealnessJudge`): the reward's own network through transforms that keep what a person
  sees -- how much of the age change is visible (:mod:`agelatent.evaluation.realness`).

:meth:`Judge.check` validates a spec before any model loads; a judge is built (and calibrated on unedited
faces) once per evaluation and then :meth:`Judge.summary` reads each editor's :class:`EditResult`.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from hydra.utils import instantiate

from agelatent.editors.base import EditResult
from agelatent.evaluation.independent import calibrate, independent_summary
from agelatent.evaluation.metrics import bootstrap_ci
from agelatent.evaluation.realness import (
    calibrate_realness,
    judged_transforms,
    read_faces,
    realness_summary,
    transforms_from_config,
)

__all__ = [
    "JUDGES",
    "IndependentAgeJudge",
    "Judge",
    "PerceptionJudge",
    "RealnessJudge",
    "build_judges",
    "check_judges",
]

log = logging.getLogger(__name__)


class Judge:
    """A second evaluator of kind :attr:`kind`, built from its ``evaluator.<name>`` spec."""

    kind: ClassVar[str]

    def __init__(self, name: str, spec, world) -> None:
        self.name, self.spec, self.world = name, spec, world

    @staticmethod
    def check(name: str, spec) -> None:
        """Refuse a bad spec before any model loads (default: nothing to check)."""

    def summary(self, result: EditResult, hard_bound: float, protocol) -> dict[str, float]:
        raise NotImplementedError


class PerceptionJudge(Judge):
    kind = "perception"

    def __init__(self, name: str, spec, world) -> None:
        super().__init__(name, spec, world)
        self.model = instantiate(spec.model).to(world.device).eval()
        self._start = None  # every editor starts from the same faces: scored once

    @torch.no_grad()
    def summary(self, result: EditResult, hard_bound: float, protocol) -> dict[str, float]:
        if self._start is None:
            self._start = self.model(result.start_images)
        final = self.model(result.final_images)
        sim = self.model.identity_similarity(final.identity, self._start.identity)
        err = (final.ages_years - result.targets).abs()
        out = {}
        for key, values in (
            ("age_error", err),
            ("success_rate", ((err <= protocol.success_window_years) & (sim >= hard_bound)).float()),
            ("similarity", sim),
        ):
            ci = bootstrap_ci(values, protocol.bootstrap.resamples, protocol.bootstrap.seed)
            out[key], out[key + "_low"], out[key + "_high"] = ci.mean, ci.low, ci.high
        return out


class IndependentAgeJudge(Judge):
    kind = "independent_age"

    @staticmethod
    def check(name: str, spec) -> None:
        if not spec.min_years > 0:
            raise ValueError(f"evaluator.{name}.min_years must be > 0, got {spec.min_years}")

    def __init__(self, name: str, spec, world) -> None:
        super().__init__(name, spec, world)
        self.model = instantiate(spec.model).to(world.device).eval()
        self.calibration = calibrate(world, self.model, spec.natural_faces, spec.natural_first_seed)
        log.info(
            "%s on %d unedited faces: slope %.3f on the reward's ages (correlation %.2f)",
            name, len(self.calibration.reward_ages), self.calibration.slope, self.calibration.correlation,
        )  # fmt: skip
        self._start = None

    @torch.no_grad()
    def summary(self, result: EditResult, hard_bound: float, protocol) -> dict[str, float]:
        if self._start is None:
            self._start = self.model.ages(result.start_images).cpu()
        final = self.model.ages(result.final_images).cpu()
        return independent_summary(
            self._start, final, result, self.calibration, self.spec.min_years, protocol.bootstrap
        )


class RealnessJudge(Judge):
    kind = "realness"

    @staticmethod
    def check(name: str, spec) -> None:
        transforms_from_config(spec.transforms)
        if not spec.natural_faces >= 3:
            raise ValueError(
                f"evaluator.{name}.natural_faces must be >= 3 (a slope), got {spec.natural_faces}"
            )

    def __init__(self, name: str, spec, world) -> None:
        super().__init__(name, spec, world)
        self.transforms = transforms_from_config(spec.transforms)
        judged_transforms(
            world, self.transforms
        )  # refused here, before any edit, if the robust reading covers all
        self._start = None
        self.calibration = calibrate_realness(
            world, self.transforms, spec.natural_faces, spec.natural_first_seed, spec.seed
        )
        log.info(
            "%s on %d unedited faces: natural slope %s",
            name,
            len(self.calibration.clean),
            ", ".join(
                f"{t} {self.calibration.slope(t):.2f} (r {self.calibration.correlation(t):.2f})"
                for t in self.transforms
            ),
        )

    def summary(self, result: EditResult, hard_bound: float, protocol) -> dict[str, float]:
        if self._start is None:  # every editor starts from the same faces: read once
            self._start = read_faces(
                self.world, result.start_images, self.transforms, self.spec.seed, identity=True
            )
        return realness_summary(
            self.world,
            result,
            self.calibration,
            self.transforms,
            protocol.bootstrap,
            self.spec.seed,
            self._start,
        )


#: evaluator kind -> its judge
JUDGES: dict[str, type[Judge]] = {j.kind: j for j in (PerceptionJudge, IndependentAgeJudge, RealnessJudge)}


def check_judges(evaluators) -> None:
    """Every ``evaluator.<name>`` spec checked, naming the key (before any model loads)."""
    for name, spec in (evaluators or {}).items():
        if spec.get("kind") not in JUDGES:
            raise ValueError(f"evaluator.{name}.kind must be one of {list(JUDGES)}, got {spec.get('kind')!r}")
        JUDGES[spec.kind].check(name, spec)


def build_judges(evaluators, world) -> dict[str, Judge]:
    """The configured judges, built and calibrated on ``world``."""
    return {name: JUDGES[spec.kind](name, spec, world) for name, spec in (evaluators or {}).items()}
