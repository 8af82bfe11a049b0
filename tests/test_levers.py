"""The levers action (``action=levers``): the stiff step solves its constrained problem, each lever does to a
real face's step what it says, the observation forecasts the identity movement the sketch predicts, and a
levers policy trains and edits."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import assert_train_refuses, cpu_config, make_env

from agelatent.cli.evaluate import run as evaluate
from agelatent.cli.train import train
from agelatent.editors import build_editor
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.local_linear import constrained_min_norm_step, stiff_min_norm_step
from agelatent.evaluation.comparison import editor_mdp, validate_editors

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small ridge fit keeps the semantic basis cheap here (the default fits 2000 latents)
SMALL_BASIS = ("editor_settings.global_direction.num_samples=200",)
FACES = [500_000, 500_001, 500_002, 500_003]


def problem(seed: int = 0, b: int = 3, d: int = 12, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(b, d, generator=g, dtype=torch.float64)
    keep = torch.randn(b, 1, d, generator=g, dtype=torch.float64)
    years = torch.randn(b, generator=g, dtype=torch.float64) * 5
    sketch = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    return grad, keep, years, sketch


def test_the_stiff_step_meets_its_constraints_and_is_the_dense_solution():
    grad, keep, years, sketch = problem()
    b, k, d = sketch.shape
    stiffness = torch.tensor([0.0, 1.0, 30.0], dtype=torch.float64)  # one per row
    step = stiff_min_norm_step(grad, keep, years, sketch, stiffness)
    rows = torch.cat([grad[:, None], keep], 1)
    rhs = torch.stack([years, torch.zeros_like(years)], 1)
    close = dict(atol=1e-4, rtol=1e-5)  # the Gram matrix is damped by 1e-6 of its diagonal, as the walk's is
    torch.testing.assert_close(
        torch.einsum("brd,bd->br", rows, step), rhs, **close
    )  # age asked, P(male) kept
    for i in range(b):  # the dense solution of argmin δᵀMδ subject to Jδ = b, M = I + (λ/k) SᵀS
        m = torch.eye(d, dtype=torch.float64) + (stiffness[i] / k) * sketch[i].T @ sketch[i]
        mi_at = torch.linalg.solve(m, rows[i].T)
        dense = mi_at @ torch.linalg.solve(rows[i] @ mi_at, rhs[i])
        torch.testing.assert_close(step[i], dense, **close)
    free = stiff_min_norm_step(grad, keep, years, sketch, torch.zeros(b, dtype=torch.float64))
    torch.testing.assert_close(free, constrained_min_norm_step(grad, keep, years), atol=1e-6, rtol=1e-6)
    capped = stiff_min_norm_step(grad, keep, years, sketch, stiffness, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(
        capped.norm(dim=1), torch.minimum(step.norm(dim=1), torch.tensor([0.1, 0.2, 0.3]).double())
    )


def test_stiffer_steps_move_the_sketched_identity_less_and_are_longer():
    grad, keep, years, sketch = problem(1)
    steps = [
        stiff_min_norm_step(grad, keep, years, sketch, torch.full((3,), s)) for s in (0.0, 1.0, 10.0, 100.0)
    ]
    drift = [float((sketch @ s[..., None]).norm()) for s in steps]
    length = [float(s.norm()) for s in steps]
    assert drift == sorted(drift, reverse=True) and drift[-1] < 0.5 * drift[0]
    assert length == sorted(length)


@pytest.fixture(scope="module")
def env(world):
    env = make_env(world, "action=levers", *SMALL_BASIS, auto_reset=False, num_envs=4)
    env.reset_to(world.sample_latents(FACES), torch.tensor([60.0, 60.0, 20.0, 20.0]))
    return env


def test_each_lever_changes_the_step_as_documented(env):
    assert env.action_dim == 3
    assert env.observation_dim == 8 + 2 + 3 + (2 + 128)  # scalars, ĝ and P(male) steepness, forecast, face
    for levers in [(0.0, 0.0, 1.0), (1.0, 0.5, 0.5), (10.0, 1.0, 2.0)]:  # actions_of inverts levers_of
        got = env.levers_of(env.actions_of(*levers))
        for value, row in zip(levers, got, strict=True):
            torch.testing.assert_close(row, torch.full((4,), value))
    years = (env.targets - env.ages).clamp(-16.0, 16.0)  # the walk's request (max_years_per_step 16)

    def step(stiffness, mix, scale):
        return env.displacement(env.actions_of(stiffness, mix, scale))

    # no stiffness, no mix, scale 1: the walk's own step (P(male) kept to first order, capped at 0.5)
    plain = step(0.0, 0.0, 1.0)
    torch.testing.assert_close(plain, env.age_step(years), atol=1e-5, rtol=1e-4)
    # stiffness: the sketched identity movement falls, the age change asked for stays (uncapped rows)
    stiff = step(10.0, 0.0, 1.0)
    moved = [(env._sketch @ s[..., None]).squeeze(-1).norm(dim=1) for s in (plain, stiff)]
    assert bool((moved[1] < 0.7 * moved[0]).all())
    uncapped = (plain.norm(dim=1) < 0.5 - 1e-4) & (stiff.norm(dim=1) < 0.5 - 1e-4)  # max_step_norm 0.5
    assert bool(uncapped.any())
    for s in (plain, stiff):
        age_change = (s * env.age_gradient).sum(1)
        torch.testing.assert_close(age_change[uncapped], years[uncapped], rtol=1e-3, atol=1e-3)
    # mix: β = 1 is a step within the semantic basis; β = 0.5 the mean of the two (before the cap)
    semantic = step(0.0, 1.0, 1.0)
    torch.testing.assert_close(semantic @ env.semantic.T @ env.semantic, semantic, atol=1e-5, rtol=1e-4)
    half = step(0.0, 0.5, 1.0)
    small = (plain.norm(dim=1) < 0.2) & (semantic.norm(dim=1) < 0.2)
    torch.testing.assert_close(half[small], ((plain + semantic) / 2)[small], atol=1e-5, rtol=1e-4)
    # scale: the request and the cap both times s, so the whole step is s times the plain one
    for scale in (0.5, 2.0):
        torch.testing.assert_close(step(0.0, 0.0, scale), scale * plain, atol=1e-5, rtol=1e-4)


def test_the_sketch_and_the_forecast_follow_the_identity_jacobian(world):
    """The sketch is U J_e for the env's random U (checked along a random direction through a Jacobian-vector
    product); with many rows the forecast is the identity embedding's movement per year of the one-year
    minimum-norm step."""
    k = 64
    env = make_env(
        world, "action=levers", *SMALL_BASIS, f"action.identity_sketch={k}", auto_reset=False, num_envs=1
    )
    z = world.sample_latents(FACES[:1])
    env.reset_to(z, torch.tensor([60.0]))

    def moved(direction):  # J_e · direction at z
        _, out = torch.autograd.functional.jvp(
            lambda x: world.score(x, with_grad=True).identity, z, direction
        )
        return out[0]

    u = torch.randn(
        k, 1, env.identity_dim, generator=torch.Generator().manual_seed(env.cfg.action.basis_seed + 1)
    )
    direction = torch.randn(1, z.shape[1], generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(
        env._sketch[0] @ direction[0], u[:, 0] @ moved(direction), rtol=1e-3, atol=1e-4
    )
    grad = env.age_gradient
    per_year = float(moved(grad / grad.pow(2).sum()).norm())  # ‖J_e δ₁‖, δ₁ = ĝ/‖ĝ‖²: one year
    forecast = 10 ** float(
        env.observation()[0, 11]
    )  # after the 8 scalars, log10|ĝ|, log10|∇P(male)|, semantic
    assert forecast == pytest.approx(per_year, rel=0.3)


def test_a_levers_policy_trains_and_edits_the_test_protocol(tmp_path, model_files):
    train(
        cpu_config(
            "train",
            "profile=debug",
            f"paths.runs_dir={tmp_path}",
            "run_name=levers",
            "logger=none",
            "experiment=levers",
            *SMALL_BASIS,
        ),  # fmt: skip
        tmp_path / "levers",
    )
    out = tmp_path / "eval"
    eval_cfg = cpu_config(
        "eval",
        f"policy={tmp_path / 'levers'}",
        "experiment=real_edits",
        "editors=[sac_policy]",
        "evaluator=none",
        "protocol.num_faces=2",
        "protocol.targets=[25,55]",
    )
    (row,) = evaluate(eval_cfg, out)
    assert row["editor"] == "sac_policy" and 0.0 <= row["success_rate"] <= 1.0
    with open(out / "edits.csv") as handle:
        edits = list(csv.DictReader(handle))
    assert len(edits) == 4
    for edit in edits:  # the sketch comes from the step's own forward pass: one world call per face and step
        assert float(edit["world_calls"]) == int(edit["steps"]) + 1
        assert math.isfinite(float(edit["final_age"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["action=levers", "env.age_direction.method=probes", "action.keep=[]"],
            r"action.mode=levers sketches the identity Jacobian by vector-Jacobian products",
        ),
        (["action=levers", "action.max_scale=0.5"], r"action.max_scale must be a finite number >= 1"),
        (["action=levers", "action.identity_sketch=0"], r"action.identity_sketch must be an integer >= 1"),
        (["action=levers", "demonstrations=walk"], r"but action.mode=levers: use experiment=amortized"),
        (
            ["action=levers", "target=relative", "target.max_delta=40", "env.max_steps=1"],
            r"at most max_steps \* action.max_years_per_step \* action.max_scale",
        ),
    ],
)
def test_bad_levers_configs_fail_before_any_work(tmp_path, overrides, message):
    assert_train_refuses(tmp_path, overrides, message)


def test_the_lever_walk_at_no_stiffness_no_mix_and_scale_one_is_the_walk(world):
    cfg = cpu_config("eval", *SMALL_BASIS)
    lever = build_editor(
        "lever_walk", {**cfg.editor_settings.lever_walk, "stiffness": 0.0, "mix": 0.0, "scale": 1.0}
    )
    walk = build_editor("local_linear_walk", {**cfg.editor_settings.local_linear_walk, "keep": ["gender"]})
    mdp = LatentAgeEnvConfig.from_config(cfg)
    envs = [LatentAgeEnv.for_edits(world, editor_mdp(e, mdp), 4) for e in (lever, walk)]
    for env, editor in zip(envs, (lever, walk), strict=True):
        env.reset_to(world.sample_latents(FACES), torch.tensor([60.0, 60.0, 20.0, 20.0]))
        editor.prepare(env)
    torch.testing.assert_close(lever.propose(envs[0]), walk.propose(envs[1]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stiffness": -1.0}, r"stiffness must be >= 0 and mix in \[0, 1\]"),
        ({"mix": 1.5}, r"stiffness must be >= 0 and mix in \[0, 1\]"),
        ({"stiffness": 50.0}, r"must lie within the levers' range: stiffness <= action.max_stiffness=10"),
        ({"scale": 4.0}, r"scale within 1/action.max_scale..action.max_scale=2"),
    ],
)
def test_bad_lever_walk_settings_are_named(settings, message):
    cfg = cpu_config("eval", *SMALL_BASIS, "editors=[lever_walk]")
    for key, value in settings.items():
        cfg.editor_settings.lever_walk[key] = value
    with pytest.raises(ValueError, match=rf"editor_settings.lever_walk: .*{message}"):
        validate_editors(cfg)
