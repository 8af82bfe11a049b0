"""The latent age-editing MDP on the real embedded world: protocol, transitions, termination, actions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import cpu_config, make_env
from gymnasium.utils.env_checker import check_env

from agelatent.env.batched import check_step_result
from agelatent.env.gym_single import LatentAgeGymEnv
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.local_linear import (
    AgeDirectionConfig,
    constrained_min_norm_step,
    local_age_gradient,
    null_space_basis,
)
from agelatent.env.outcome import Outcome
from agelatent.env.rewards import Reward
from agelatent.env.targets import TargetConfig

SMALL = ("env.num_envs=4", "env.max_steps=4")


def probes(num_probes: int) -> AgeDirectionConfig:
    cfg = cpu_config("train", "env.age_direction.method=probes", f"env.age_direction.num_probes={num_probes}")
    return LatentAgeEnvConfig.from_config(cfg).age_direction


def test_make_trains_the_observation_these_tests_check(world):
    # the default MDP of `make train`: local_linear actions keeping identity and gender, an observation of
    # the face but not the latent: 8 scalars, log |g| and the kept quantities' log gradient norms, P(male)
    # and its change, the identity embedding's offset (dlib's 128 numbers)
    env = make_env(world)
    assert env.cfg.action.mode == "local_linear" and not env.cfg.observe_latent
    assert env.cfg.action.keep == ("identity", "gender") and env.cfg.observe_face
    assert env.observation_dim == 8 + 1 + 2 + 2 + 128
    assert env.action_dim == 1 + env.cfg.action.num_corrections
    blind = make_env(world, "env.observe_face=false", "action.keep=[]")  # the policy before it saw the face
    assert blind.observation_dim == 8 + 1
    full = make_env(world, "action=full")
    assert (
        full.cfg.observe_latent and full.observation_dim == 2 * 100 + 8 + 2 + 128 and full.action_dim == 100
    )


def test_steps_follow_the_batched_protocol_and_auto_reset(world):
    env = make_env(world, *SMALL)
    obs = env.reset(seed=3)
    assert obs.shape == (4, env.observation_dim)
    assert env.action_dim == 1 + 4
    ended = 0
    for _ in range(6):
        result = env.step(torch.rand(4, env.action_dim) * 2 - 1)
        check_step_result(env, result)
        ended += int(result.done.sum())
        # rows that ended restart at step 0 with a fresh face
        assert (env.t[result.done] == 0).all()
        assert torch.equal(env.z[result.done], env.z0[result.done])
    assert ended >= 4  # max_steps=4: every row ended at least once in 6 steps
    stats = env.episode_metrics()
    assert stats["episodes"] == ended and stats["length"] <= 4


def test_the_same_seed_gives_the_same_episodes(world):
    a, b = make_env(world, *SMALL), make_env(world, *SMALL)
    torch.testing.assert_close(a.reset(seed=11), b.reset(seed=11))
    assert not torch.equal(a.reset(seed=12), b.reset(seed=11))


def test_a_local_linear_step_moves_age_as_asked(world):
    env = make_env(world, auto_reset=False, num_envs=16, max_steps=1, success_tolerance_years=0.5)
    env.reset_to(world.sample_latents(range(500, 516)), torch.full((16,), 80.0))
    before = env.ages.clone()
    actions = torch.zeros(16, env.action_dim)
    actions[:8, 0], actions[8:, 0] = 0.5, -0.5  # +4 years, -4 years
    env.step(actions)
    change = env.ages - before
    # age is only locally linear: the step has the asked sign for most faces and about the asked size on
    # median (one face of the 16 moves 10 years the wrong way)
    assert (change[:8] > 0).sum() >= 6 and (change[8:] < 0).sum() >= 5
    assert change[:8].median() > 1.0 and change[8:].median() < -1.0


def test_corrections_are_orthogonal_to_the_age_direction(world):
    env = make_env(world, *SMALL, "action.correction_scale=0.1", auto_reset=False)
    env.reset_to(world.sample_latents(range(4)), torch.full((4,), 40.0))
    actions = torch.zeros(4, env.action_dim)
    actions[:, 1:] = torch.tensor([1.0, -1.0, 0.5, 0.0])
    delta = env.displacement(actions)
    cos = torch.nn.functional.cosine_similarity(delta, env.age_gradient, dim=1)
    assert cos.abs().max() < 1e-4
    torch.testing.assert_close(delta.norm(dim=1), torch.full((4,), 0.1 * math.sqrt(1 + 1 + 0.25)))


class LinearAgeWorld:
    """Ages exactly linear in the latent: what the probe estimator must recover."""

    def __init__(self, slope: torch.Tensor) -> None:
        self.slope = slope

    def ages(self, z: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
        return 30.0 + z @ self.slope


def test_probes_recover_the_gradient_of_a_linear_age_function():
    slope = torch.randn(20, generator=torch.Generator().manual_seed(0))
    world = LinearAgeWorld(slope)
    z = torch.randn(3, 20)
    full, ages = local_age_gradient(world, z, dataclasses.replace(probes(20), probe_sigma=0.5))
    torch.testing.assert_close(full, slope.expand(3, -1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ages, 30.0 + z @ slope)
    # K < d probes: the gradient's projection onto the probed subspace (never longer than the gradient)
    part, _ = local_age_gradient(
        world,
        z,
        dataclasses.replace(probes(5), probe_sigma=0.5),
        torch.Generator().manual_seed(1),
    )
    assert (part.norm(dim=1) < slope.norm()).all()
    torch.testing.assert_close((part * slope).sum(1), part.pow(2).sum(1), rtol=1e-4, atol=1e-4)


def test_autograd_direction_is_the_age_gradient_on_the_real_world(world):
    z = world.sample_latents(range(20, 22))
    grad, ages = local_age_gradient(
        world, z, LatentAgeEnvConfig.from_config(cpu_config("train")).age_direction
    )
    # landmarks are constants for autograd; with them held, a tiny step's age change is first order
    p = world.perception
    with torch.no_grad():
        lm = p.landmarks(p.work_images(world.generate(z)))
        step = 1e-3 * grad / grad.norm(dim=1, keepdim=True)

        def fixed_alignment_ages(latents):
            return p.age_model(p.chips(p.pixels(world.generate(latents)), lm, 64, 0.2))

        change = fixed_alignment_ages(z + step) - fixed_alignment_ages(z)
    torch.testing.assert_close(change, (grad * step).sum(1), rtol=0.05, atol=1e-3)
    torch.testing.assert_close(ages, world.ages(z))


def test_success_and_identity_loss_terminate_and_freeze_rows(world):
    env = make_env(world, auto_reset=False, num_envs=2, max_steps=5)
    assert env.cfg.age_direction.method == "autograd"
    z = world.sample_latents([7, 7])
    env.reset_to(z, torch.zeros(2))
    start_age = float(env.ages[0])
    # row 0: target = its own age (any small step succeeds); row 1: jump far away (identity lost)
    env.targets[0] = start_age
    delta = torch.zeros(2, 100)
    delta[0] = 1e-3
    delta[1] = 4.0 * torch.randn(100, generator=torch.Generator().manual_seed(0))
    result = env.step_latent(delta)
    assert result.terminated.tolist() == [True, True] and not result.truncated.any()
    assert env.outcome.tolist() == [Outcome.SUCCESS, Outcome.IDENTITY_LOST]
    assert result.reward[0] > result.reward[1]
    frozen = env.z.clone()
    env.step_latent(torch.ones(2, 100))
    assert torch.equal(env.z, frozen) and (env.t == 1).all()


def test_episodes_truncate_at_max_steps(world):
    env = make_env(world, auto_reset=False, num_envs=2, max_steps=2, success_tolerance_years=0.1)
    env.reset_to(world.sample_latents([1, 2]), torch.tensor([80.0, 80.0]))
    env.step_latent(torch.zeros(2, 100))
    result = env.step_latent(torch.zeros(2, 100))
    assert result.truncated.all() and not result.terminated.any() and (env.outcome == Outcome.TIMEOUT).all()


def test_typical_set_projection_keeps_latents_near_the_prior_shell(world):
    env = make_env(world, "action=full", auto_reset=False, num_envs=2)
    assert env.cfg.typical_set and env.cfg.typical_set_tolerance == pytest.approx(0.1)
    env.reset_to(world.sample_latents([3, 4]), torch.tensor([30.0, 30.0]))
    env.step_latent(env.z * 0.5)  # push outwards by 50%
    radius = env.z.norm(dim=1) / 10.0
    torch.testing.assert_close(radius, torch.full((2,), 1.1))
    loose = make_env(world, "action=full", auto_reset=False, num_envs=2, typical_set=False)
    loose.reset_to(world.sample_latents([3, 4]), torch.tensor([30.0, 30.0]))
    loose.step_latent(loose.z * 0.5)
    torch.testing.assert_close(loose.z, loose.z0 * 1.5)


def test_full_actions_scale_to_the_step_size(world):
    env = make_env(
        world, "action=full", "action.full_step_size=0.05", auto_reset=False, num_envs=2, typical_set=False
    )
    assert env.action_dim == 100 and env.observation_dim == 2 * 100 + 8 + 2 + 128  # latent, scalars, face
    env.reset_to(world.sample_latents([5, 6]), torch.tensor([30.0, 50.0]))
    actions = torch.ones(2, 100)
    env.step(actions)
    torch.testing.assert_close(env.z - env.z0, torch.full((2, 100), 0.05))


def test_relative_targets_are_offsets_from_the_start_age(world):
    env = make_env(
        world, *SMALL, "target=relative", "target.max_delta=10", "target.min_age=0", "target.max_age=80"
    )
    assert env.cfg.target.min_delta == 5
    env.reset(seed=0)
    gap = (env.targets - env.start_ages).abs()
    assert ((gap >= 5 - 1e-4) & (gap <= 10 + 1e-4)).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["action.mode=diagonal"],
            r"action.mode must be one of \('full', 'local_linear', 'semantic', 'levers'\)",
        ),
        (["identity.hard_bound=0.8", "identity.soft_threshold=0.6"], "0 <= hard_bound <= soft_threshold < 1"),
        (["env.max_steps=0"], "env.max_steps must be >= 1"),
        (["action.max_years_per_step=-1.0"], "action.max_years_per_step must be a finite number > 0"),
        (
            ["env.max_steps=2", "action.max_years_per_step=8.0", "target=relative", "target.max_delta=40"],
            r"unreachable targets: target.max_delta=40 .* at most .* = 19 years",
        ),
        (["+env.succes_tolerance=1"], r"env: unknown key\(s\) \['succes_tolerance'\]"),
        (["~env.offset_scale"], r"env: missing key\(s\) \['offset_scale'\]"),
        (["~action.basis_seed"], r"env.action: missing key\(s\) \['basis_seed'\]"),
        (["action.keep=[identity,age]"], r"action.keep must be distinct names from \['identity', 'gender'\]"),
    ],
)
def test_bad_configs_fail_before_any_model_runs(overrides, message):
    with pytest.raises(ValueError, match=message):
        LatentAgeEnvConfig.from_config(cpu_config("train", *overrides))


def test_targets_outside_the_age_models_range_are_refused(world):
    cfg = LatentAgeEnvConfig.from_config(cpu_config("train", "target.max_age=90"))
    with pytest.raises(ValueError, match=r"target ages must lie in the age model's range \[0, 80\]"):
        LatentAgeEnv(world, cfg, Reward.zero())


def test_autograd_directions_need_a_differentiable_perception(world):
    class Frozen:
        differentiable = False
        age_range = (0.0, 80.0)

    fake = dataclasses.make_dataclass("W", [("perception", object), ("device", object), ("latent_dim", int)])
    cfg = LatentAgeEnvConfig.from_config(cpu_config("train"))
    with pytest.raises(ValueError, match="age_direction.method=probes with perception.runtime=onnxruntime"):
        LatentAgeEnv(fake(Frozen(), torch.device("cpu"), 100), cfg, Reward.zero())


def test_reset_to_checks_its_inputs(world):
    env = make_env(world, *SMALL, auto_reset=False)
    with pytest.raises(ValueError, match=r"start_latents must be \[num_envs, latent_dim\] = \(4, 100\)"):
        env.reset_to(torch.zeros(3, 100), torch.zeros(3))
    with pytest.raises(ValueError, match=r"target ages must lie in the age model's range \[0, 80\]"):
        env.reset_to(torch.zeros(4, 100), torch.tensor([20.0, 30.0, 40.0, 95.0]))


def test_target_sampling_is_reproducible_and_in_range():
    cfg = LatentAgeEnvConfig.from_config(cpu_config("train", "target.min_age=25", "target.max_age=35")).target
    assert isinstance(cfg, TargetConfig) and cfg.mode == "absolute"
    a = cfg.sample(torch.zeros(64), torch.Generator().manual_seed(1))
    b = cfg.sample(torch.zeros(64), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 25 and a.max() <= 35


def test_a_single_episode_passes_gymnasiums_env_checker(world):
    cfg = cpu_config("train", "env.max_steps=3")
    env = LatentAgeGymEnv(
        world, LatentAgeEnvConfig.from_config(cfg), Reward.from_config(cfg.reward), "rgb_array"
    )
    check_env(env, skip_render_check=False)
    obs, info = env.reset(seed=5)
    target = env.env.cfg.target
    assert obs.shape == env.observation_space.shape and target.min_age <= info["target"] <= target.max_age
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    assert env.render().shape == (64, 64, 3)


def test_the_constrained_step_is_the_minimum_norm_solution_of_its_linear_system():
    g = torch.Generator().manual_seed(0)
    grad, keep = torch.randn(5, 30, generator=g), torch.randn(5, 2, 30, generator=g)
    keep[0, 1] = 0.0  # a kept quantity at its minimum (the identity drift at the start face): no constraint
    delta = torch.linspace(-8, 8, 5)
    step = constrained_min_norm_step(grad, keep, delta)
    torch.testing.assert_close((grad * step).sum(1), delta, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.einsum("brd,bd->br", keep, step), torch.zeros(5, 2), atol=1e-3, rtol=0)
    rows = torch.cat([grad[:, None], keep], 1)
    in_row_space = torch.einsum(
        "brd,br->bd", rows, torch.linalg.lstsq(rows.transpose(1, 2), step[..., None]).solution[..., 0]
    )
    torch.testing.assert_close(in_row_space, step, atol=1e-4, rtol=0)  # minimum norm: no null-space part
    capped = constrained_min_norm_step(grad, keep, delta, max_norm=0.1)
    assert capped.norm(dim=1).max() <= 0.1 + 1e-6
    basis = null_space_basis(rows, torch.randn(4, 30, generator=g))
    torch.testing.assert_close(rows @ basis.transpose(1, 2), torch.zeros(5, 3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(basis @ basis.transpose(1, 2), torch.eye(4).expand(5, 4, 4), atol=1e-5, rtol=0)


def test_keeping_gender_and_identity_moves_them_less_for_the_same_age_step(world):
    """On the real world: two 4-year steps change P(male) and identity less when the age step also keeps
    them to first order, and still change age as asked. Only a little less (measured on these 32 faces:
    mean |dP(male)| 0.098 vs 0.111, identity drift 0.160 vs 0.165): the scores are far from linear at
    this step size (see docs/findings.md, "Age is noisy in the latent")."""
    starts, n = world.sample_latents(range(600, 632)), 32
    moved = {}
    for keep in ("[]", "[identity,gender]"):
        env = make_env(
            world, f"action.keep={keep}", "action.max_years_per_step=8.0", "action.max_step_norm=1.0",
            auto_reset=False, num_envs=n, max_steps=3,
        )  # fmt: skip
        env.reset_to(starts, torch.full((n,), 80.0))
        actions = torch.zeros(n, env.action_dim)
        actions[:, 0] = 0.5  # +4 years per step
        p0, a0 = env.p_male.clone(), env.ages.clone()
        env.step(actions)
        env.step(actions)  # the second step has a non-zero identity-drift gradient to keep
        moved[keep] = ((env.p_male - p0).abs(), 1 - env.similarity, env.ages - a0)
    (p_free, id_free, age_free), (p_kept, id_kept, age_kept) = moved["[]"], moved["[identity,gender]"]
    print(  # the figures docs/design.md quotes: pytest -s tests/test_latent_env.py -k keeping_gender
        f"mean |dP(male)| {p_kept.mean():.3f} vs {p_free.mean():.3f}, identity drift {id_kept.mean():.3f} vs "
        f"{id_free.mean():.3f}, median age change {age_kept.median():.2f} vs {age_free.median():.2f} years"
    )
    assert p_kept.mean() < 0.95 * p_free.mean()
    assert id_kept.mean() < id_free.mean()
    assert age_kept.median() > age_free.median() > 3.0


def test_the_face_observation_holds_gender_and_the_identity_offset(world):
    env = make_env(world, "env.observe_face=true", "action.keep=[gender]", auto_reset=False, num_envs=4)
    assert env.observation_dim == 8 + 2 + 2 + 128
    obs = env.reset_to(world.sample_latents(range(4)), torch.full((4,), 60.0))
    torch.testing.assert_close(obs[:, 10], env.p_male)
    assert torch.equal(obs[:, 11:], torch.zeros(4, 1 + 128))  # nothing has changed yet
    actions = torch.zeros(4, env.action_dim)
    actions[:, 0] = 1.0
    obs = env.step(actions).obs
    torch.testing.assert_close(obs[:, 12:] / env.cfg.offset_scale, env.identity - env.identity0)
    assert obs[:, 12:].abs().sum() > 0


def test_keeping_quantities_needs_autograd_directions(world):
    cfg = LatentAgeEnvConfig.from_config(
        cpu_config("train", "action.keep=[gender]", "env.age_direction.method=probes")
    )
    with pytest.raises(ValueError, match="action.keep=\\['gender'\\] needs the gradients"):
        LatentAgeEnv(world, cfg, Reward.zero())


def test_a_residual_action_of_zero_is_the_walks_step_and_a0_moves_its_request(world):
    """``action.residual``: a = 0 takes exactly the local-linear walk's step, and a[0] shifts the walk's
    request clip(target − age) before the same clip (one step of 6 faces, half asking more than the cap)."""
    from agelatent.editors.baselines import LocalLinearWalk

    n = 6
    env = make_env(world, "action.residual=true", auto_reset=False, num_envs=n)
    env.reset_to(world.sample_latents(range(40, 40 + n)), torch.tensor([20.0, 70.0, 30.0, 60.0, 25.0, 65.0]))
    cap = env.cfg.action.max_years_per_step
    walk = LocalLinearWalk.of_action(env.cfg.action).propose(env)
    torch.testing.assert_close(env.displacement(torch.zeros(n, env.action_dim)), walk)
    actions = torch.zeros(n, env.action_dim)
    actions[:, 0] = -0.25  # four years fewer (or more towards younger) than the walk asks
    wanted = (env.targets - env.ages - 0.25 * cap).clamp(-cap, cap)
    torch.testing.assert_close(env.displacement(actions), env.age_step(wanted))
    assert not torch.allclose(env.displacement(actions), walk)
