"""The independent evaluator's statistics on edits whose answer is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from agelatent.editors.base import EditResult
from agelatent.evaluation.independent import Calibration, independent_summary, ols_slope

BOOTSTRAP = SimpleNamespace(resamples=500, seed=0)


def _edits(start: torch.Tensor, final: torch.Tensor, targets: torch.Tensor) -> EditResult:
    n = len(start)
    return EditResult(
        editor="test",
        start_latents=torch.zeros(n, 2),
        targets=targets,
        latents=torch.zeros(2, n, 2),
        ages=torch.stack([start, final]),
        similarity=torch.ones(2, n),
        p_male=torch.zeros(2, n),
        final_images=torch.zeros(n, 3, 4, 4),
        start_images=torch.zeros(n, 3, 4, 4),
        outcome=torch.zeros(n, dtype=torch.long),
        steps=torch.ones(n, dtype=torch.long),
        world_calls=n,
        row_world_calls=torch.ones(n),
        typicality=torch.zeros(n),
        seconds=0.0,
    )


@pytest.fixture
def world_of_faces():
    """Reward ages of 400 natural faces, and an independent model that sees half of each year, noisily."""
    g = torch.Generator().manual_seed(0)
    reward = 20 + 40 * torch.rand(400, generator=g)
    independent = 30 + 0.5 * (reward - 40) + 2 * torch.randn(400, generator=g)
    cal = Calibration(reward, independent)
    start = 20 + 40 * torch.rand(300, generator=g)
    targets = 20 + 40 * torch.rand(300, generator=g)
    return g, cal, start, targets


def test_ols_slope_recovers_a_line():
    x = torch.linspace(0, 10, 50)
    assert float(ols_slope(x, 3 * x + 7)) == pytest.approx(3.0)
    assert ols_slope(x.expand(4, 50), (2 * x).expand(4, 50)).shape == (4,)


def test_edits_seen_like_natural_differences_confirm_and_unseen_ones_do_not(world_of_faces):
    g, cal, start, targets = world_of_faces
    assert cal.slope == pytest.approx(0.5, abs=0.05)
    result = _edits(start, targets, targets)  # the reward network says every edit hit its target
    seen = 0.5 * (targets - start) + 2 * torch.randn(300, generator=g)  # the independent model agrees
    real = independent_summary(torch.zeros(300), seen, result, cal, 10.0, BOOTSTRAP)
    assert real["confirmation"] == pytest.approx(1.0, abs=0.1)
    assert real["confirmation_low"] < 1.0 < real["confirmation_high"]
    assert real["direction_agreement"] > 0.95
    assert real["asked_edits"] == float(((targets - start).abs() >= 10).sum())
    unseen = 2 * torch.randn(300, generator=g)  # the reward's age moved, the face did not
    gamed = independent_summary(torch.zeros(300), unseen, result, cal, 10.0, BOOTSTRAP)
    assert abs(gamed["confirmation"]) < 0.15 and gamed["confirmation_high"] < real["confirmation_low"]
    assert 0.35 < gamed["direction_agreement"] < 0.65  # chance
