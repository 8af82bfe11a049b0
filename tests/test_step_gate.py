"""experiments/step_gate.py: the stiff step (identity drift priced through a sketched Jacobian) solves its
constrained least-squares problem, and the gate's walk runs edits on the real world."""

from __future__ import annotations

import pytest
import torch
from conftest import load_experiment

from agelatent.env.local_linear import constrained_min_norm_step


@pytest.fixture(scope="module")
def gate():
    return load_experiment("step_gate")


def problem(seed: int = 0, b: int = 3, d: int = 12, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(b, 2, d, generator=g, dtype=torch.float64)
    rhs = torch.stack(
        [torch.randn(b, generator=g, dtype=torch.float64) * 5, torch.zeros(b, dtype=torch.float64)], 1
    )
    sketch = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    return rows, rhs, sketch


def test_the_stiff_step_meets_its_constraints_and_is_the_dense_solution(gate):
    rows, rhs, sketch = problem()
    k, d = sketch.shape[1], sketch.shape[2]
    for stiffness in (0.0, 1.0, 30.0):
        step = gate.stiff_step(rows, rhs, sketch, stiffness)
        torch.testing.assert_close(
            torch.einsum("brd,bd->br", rows, step), rhs
        )  # age change asked, P(male) kept
        m = torch.eye(d, dtype=torch.float64) + (stiffness / k) * sketch.transpose(1, 2) @ sketch  # dense M
        mi_at = torch.linalg.solve(m, rows.transpose(1, 2))
        dense = (mi_at @ torch.linalg.solve(rows @ mi_at, rhs[..., None])).squeeze(-1)
        torch.testing.assert_close(step, dense)
    free = gate.stiff_step(rows, rhs, sketch, 0.0)
    torch.testing.assert_close(
        free, constrained_min_norm_step(rows[:, 0], rows[:, 1:], rhs[:, 0]), atol=1e-5, rtol=1e-5
    )


def test_stiffer_steps_move_the_sketched_identity_less_and_are_longer(gate):
    rows, rhs, sketch = problem(1)
    steps = [gate.stiff_step(rows, rhs, sketch, s) for s in (0.0, 1.0, 10.0, 100.0)]
    drift = [float((sketch @ s[..., None]).norm()) for s in steps]
    length = [float(s.norm()) for s in steps]
    assert drift == sorted(drift, reverse=True) and drift[-1] < 0.5 * drift[0]
    assert length == sorted(length)


def test_the_lever_walk_moves_real_faces_towards_their_targets(gate, world):
    from conftest import make_env

    from agelatent.editors.baselines import SemanticWalk

    semantic = SemanticWalk(
        num_directions=8,
        age_direction=False,
        num_samples=1,
        first_seed=0,
        max_years_per_step=16.0,
        max_step_norm=0.5,
    )
    editor = gate.LeverWalk(
        stiffness=10.0, mix=0.5, scale=1.0, sketch=2, max_years_per_step=16.0, max_step_norm=0.5, semantic=semantic,
        seed=0,
    )  # fmt: skip
    env = make_env(world, "action.keep=[gender]", auto_reset=False, num_envs=4)
    editor.prepare(env)
    env.reset_to(
        world.sample_latents([500_000, 500_001, 500_002, 500_003]), torch.tensor([60.0, 60.0, 20.0, 20.0])
    )
    before, calls = env.ages.clone(), env.world_calls
    step = editor.propose(env)
    assert float(step.norm(dim=1).max()) <= 0.5 + 1e-5  # the norm cap
    assert env.world_calls - calls == 4  # the sketch: one forward (with its backward passes) per face
    env.step_latent(step)
    toward = (env.ages - before) * torch.sign(env.targets - before)
    assert int((toward > 0).sum()) >= 3
