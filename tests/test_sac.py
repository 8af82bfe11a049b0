"""SAC agent and batched env protocol: the maths is right, a learner learns, runs reproduce, resumes resume.

Modelled on SB3's tests: ``test_identity`` (a tiny env the algorithm must solve within N steps),
``test_deterministic`` (same seed, same numbers) and ``test_save_load`` (optimiser and entropy state survive).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import cpu_config

from agelatent.agent.networks import SquashedGaussianActor, TwinQ, polyak_update, squashed_gaussian_log_prob
from agelatent.agent.replay import ReplayBuffer
from agelatent.agent.sac import NonFiniteLossError, SACConfig, SACModule, evaluate_policy, sac_trainer
from agelatent.env.batched import BatchedEnv, StepResult, check_step_result
from agelatent.env.gym_adapter import GymBoxEnv


class TargetEnv:
    """1-D "identity" task in the spirit of SB3's IdentityEnvBox, written directly against the protocol.

    Each step shows a target ``t ~ U(-0.8, 0.8)`` and pays ``-|a - t|``; the next target is independent, so
    the optimal policy is ``a = t``. Episodes are cut (truncated, never terminated) after ``horizon`` steps.
    ``reward_fn`` lets a test corrupt the reward.
    """

    def __init__(self, num_envs: int = 1, horizon: int = 10, reward_fn=None, device: str = "cpu") -> None:
        self.num_envs, self.observation_dim, self.action_dim = num_envs, 1, 1
        self.device = torch.device(device)
        self.horizon = horizon
        self.reward_fn = reward_fn
        self.generator = torch.Generator().manual_seed(0)
        self.actions_seen: list[torch.Tensor] = []

    def _draw(self) -> torch.Tensor:
        return (torch.rand(self.num_envs, generator=self.generator) * 1.6 - 0.8).to(self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self._target = self._draw()
        self._return = torch.zeros(self.num_envs, device=self.device)
        self._length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self._target[:, None].clone()

    def step(self, actions: torch.Tensor) -> StepResult:
        self.actions_seen.append(actions.clone())
        reward = -(actions[:, 0] - self._target).abs()
        if self.reward_fn is not None:
            reward = self.reward_fn(reward)
        self._return += reward
        self._length += 1
        truncated = self._length >= self.horizon
        successor = self._draw()
        episode_return, episode_length = self._return.clone(), self._length.clone()
        self._target = torch.where(truncated, self._draw(), successor)  # finished rows start afresh
        self._return[truncated], self._length[truncated] = 0.0, 0
        return StepResult(
            obs=self._target[:, None].clone(),
            final_obs=successor[:, None].clone(),
            reward=reward,
            terminated=torch.zeros_like(truncated),
            truncated=truncated,
            episode_return=episode_return,
            episode_length=episode_length,
        )


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: extra threads only synchronise


make_trainer = sac_trainer


def cleanrl_config() -> SACConfig:
    """``agent=sac_cleanrl`` as composed from ``conf/``: CleanRL's hyperparameters."""
    return SACConfig.from_config(cpu_config("train", "agent=sac_cleanrl"))


def small_config(**overrides) -> SACConfig:
    base = dict(
        seed=0,
        total_env_steps=300,
        buffer_size=1000,
        batch_size=32,
        learning_starts=100,
        hidden_sizes=(32, 32),
    )
    return dataclasses.replace(cleanrl_config(), **{**base, **overrides})


# ---- networks ------------------------------------------------------------------------------------------


def test_squashed_gaussian_log_prob_matches_numerical_change_of_variables():
    """p(a) is the numerical derivative of the squashed CDF Φ((atanh a − μ)/σ), per dimension."""
    torch.manual_seed(0)
    mean = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    log_std = torch.tensor([[-0.5, 0.4, -1.5]], dtype=torch.float64)
    pre_tanh = mean + log_std.exp() * torch.randn(200, 3, dtype=torch.float64)
    normal = torch.distributions.Normal(mean, log_std.exp())
    a = torch.tanh(pre_tanh)
    h = 1e-5 * (1 - a.abs())  # central difference, step scaled to the distance from the bound
    density = (normal.cdf(torch.atanh(a + h)) - normal.cdf(torch.atanh(a - h))) / (2 * h)
    expected = density.log().sum(dim=-1)
    torch.testing.assert_close(
        squashed_gaussian_log_prob(pre_tanh, mean, log_std), expected, rtol=1e-6, atol=1e-5
    )


def test_log_prob_stays_finite_where_tanh_saturates_in_float32():
    pre_tanh = torch.tensor([[12.0], [-15.0]])
    log_prob = squashed_gaussian_log_prob(pre_tanh, torch.zeros(2, 1), torch.zeros(2, 1))
    assert torch.tanh(pre_tanh).abs().eq(1.0).all()  # where cleanrl's log(1 - a² + 1e-6) would be biased
    assert torch.isfinite(log_prob).all()
    # log N(u) − log(1 − tanh²u) with the exact tail  log(1 − tanh²u) ≈ log 4 − 2|u|
    expected = (
        -0.5 * pre_tanh[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) - (math.log(4.0) - 2 * pre_tanh[:, 0].abs())
    )
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-4)


def test_actor_samples_are_in_the_unit_box_with_bounded_log_std_and_reproducible():
    actor = SquashedGaussianActor(5, 3, (16, 16), log_std_min=-5, log_std_max=2)
    obs = 100 * torch.randn(64, 5)  # large inputs push the log-std head to its bounds
    _, log_std = actor(obs)
    assert log_std.min() >= -5 and log_std.max() <= 2
    a1, lp1 = actor.sample(obs, torch.Generator().manual_seed(3))
    a2, lp2 = actor.sample(obs, torch.Generator().manual_seed(3))
    assert a1.shape == (64, 3) and lp1.shape == (64,)
    assert a1.abs().max() <= 1
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2)


def test_polyak_update_is_the_exact_convex_combination():
    online, target = TwinQ(3, 2, (8,)), TwinQ(3, 2, (8,))
    before = [p.detach().clone() for p in target.parameters()]
    tau = 0.3
    polyak_update(online.parameters(), target.parameters(), tau)
    for t_before, o, t in zip(before, online.parameters(), target.parameters(), strict=True):
        expected = (1 - tau) * t_before.double() + tau * o.detach().double()
        torch.testing.assert_close(t.double(), expected, rtol=0, atol=1e-7)
    polyak_update(online.parameters(), target.parameters(), 1.0)
    assert all(torch.equal(o, t) for o, t in zip(online.parameters(), target.parameters(), strict=True))


def test_replay_buffer_wraps_around_fifo_and_restores_its_state():
    buffer = ReplayBuffer(capacity=5, obs_dim=2, act_dim=1, seed=0)
    for start in (0, 3):  # 3 rows, then 3 more: the first row is overwritten
        rows = torch.arange(start, start + 3, dtype=torch.float32)
        buffer.add(rows[:, None].repeat(1, 2), rows[:, None], rows, rows[:, None].repeat(1, 2) + 1, rows > 4)
    assert len(buffer) == 5 and buffer.pos == 1
    assert buffer.rewards.tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert buffer.terminated.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    clone = ReplayBuffer(capacity=5, obs_dim=2, act_dim=1, seed=99)
    clone.load_state_dict(buffer.state_dict())
    a, b = buffer.sample(7), clone.sample(7)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.next_obs, b.next_obs)


# ---- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"policy_lr": -3e-4}, "policy_lr"),
        ({"q_lr": 0.0}, "q_lr"),
        ({"alpha_lr": float("nan")}, "alpha_lr"),
        ({"tau": 0.0}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"gamma": 1.0}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"batch_size": 2048, "buffer_size": 1000}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_starts": -1}, "learning_starts"),
        ({"updates_per_step": 0}, "updates_per_step"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"init_alpha": 0.0}, "init_alpha"),
        ({"log_std_min": 2.0, "log_std_max": -5.0}, "log_std_min"),
    ],
)
def test_out_of_range_config_raises_naming_the_field_and_a_fix(overrides, field):
    with pytest.raises(ValueError, match=rf"SACConfig\.{field} .*got .*: \w+"):
        dataclasses.replace(cleanrl_config(), **overrides)


def test_the_cleanrl_preset_holds_cleanrls_values_and_hydra_lists_become_tuples():
    cfg = cleanrl_config()
    assert (cfg.gamma, cfg.tau, cfg.batch_size, cfg.policy_lr, cfg.q_lr) == (0.99, 0.005, 256, 3e-4, 1e-3)
    assert (cfg.learning_starts, cfg.updates_per_step, cfg.init_alpha) == (5000, 1, 1.0)
    assert cfg.hidden_sizes == (256, 256)
    ours = SACConfig.from_config(cpu_config("train", "agent.hidden_sizes=[64,64]"))
    assert ours.hidden_sizes == (64, 64) and ours.gamma == 0.95  # conf/agent/sac.yaml: short episodes


def test_a_config_key_that_is_not_a_setting_is_refused():
    with pytest.raises(ValueError, match=r"agent: unknown key\(s\) \['learning_rate'\]"):
        SACConfig.from_config(cpu_config("train", "+agent.learning_rate=0.1"))


def test_module_rejects_a_buffer_smaller_than_one_batched_step():
    with pytest.raises(ValueError, match="buffer_size"):
        SACModule(TargetEnv(num_envs=8), small_config(buffer_size=4, batch_size=4))


def test_a_zero_initialised_mean_acts_zero_until_trained():
    obs = torch.randn(16, TargetEnv().observation_dim)
    zero = SACModule(TargetEnv(), small_config(zero_init_mean=True))
    torch.testing.assert_close(zero.actor.deterministic(obs), torch.zeros(16, TargetEnv().action_dim))
    assert zero.actor.sample(obs)[0].abs().sum() > 0  # it still explores around a = 0
    assert SACModule(TargetEnv(), small_config()).actor.deterministic(obs).abs().sum() > 0


# ---- environments --------------------------------------------------------------------------------------


def test_gym_adapter_follows_the_protocol_across_an_auto_reset():
    env = GymBoxEnv("Pendulum-v1", num_envs=2)
    assert isinstance(env, BatchedEnv)
    assert (env.observation_dim, env.action_dim) == (3, 1)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 3) and obs.dtype == torch.float32
    rewards = torch.zeros(2, dtype=torch.float64)
    for t in range(200):  # Pendulum-v1 truncates at 200 steps, never terminates
        states_before = [e.unwrapped.state.copy() for e in env.envs]
        result = env.step(torch.full((2, 1), 0.5))
        check_step_result(env, result)
        rewards += result.reward.double()
        if t < 199:
            assert not result.done.any() and torch.equal(result.obs, result.final_obs)
    assert result.truncated.all() and not result.terminated.any()
    assert result.episode_length.tolist() == [200, 200]
    torch.testing.assert_close(result.episode_return.double(), rewards, rtol=1e-5, atol=1e-3)
    # final_obs is the true successor of the last step (Pendulum dynamics, torque 0.5 * 2); obs is the
    # first observation of the fresh episode.
    expected = torch.stack([pendulum_successor(state, torque=1.0) for state in states_before])
    torch.testing.assert_close(result.final_obs, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(result.obs, expected, atol=1e-2)
    assert env.step(torch.zeros(2, 1)).episode_length.tolist() == [1, 1]


def pendulum_successor(state: np.ndarray, torque: float) -> torch.Tensor:
    """gymnasium Pendulum-v1 dynamics (g=10, m=l=1, dt=0.05, max speed 8) as an observation."""
    theta, theta_dot = (float(x) for x in state)
    theta_dot = float(np.clip(theta_dot + (15.0 * math.sin(theta) + 3.0 * torque) * 0.05, -8.0, 8.0))
    theta += theta_dot * 0.05
    return torch.tensor([math.cos(theta), math.sin(theta), theta_dot], dtype=torch.float32)


def test_gym_adapter_maps_the_unit_box_onto_the_action_bounds_and_rejects_bad_input():
    env = GymBoxEnv("Pendulum-v1", num_envs=3)  # torque bounds [-2, 2]
    env.reset(seed=0)
    env.step(torch.tensor([[-1.0], [0.25], [1.0]]))
    torques = [float(np.asarray(e.unwrapped.last_u).reshape(-1)[0]) for e in env.envs]
    assert torques == pytest.approx([-2.0, 0.5, 2.0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        env.step(torch.full((3, 1), 1.5))
    with pytest.raises(ValueError, match=r"\[B, act_dim\] = \(3, 1\).*\(3, 2\)"):
        env.step(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="action space must be a 1-D Box"):
        GymBoxEnv("CartPole-v1")


def test_gym_adapter_same_seed_same_episodes():
    first, second = GymBoxEnv("Pendulum-v1", num_envs=2), GymBoxEnv("Pendulum-v1", num_envs=2)
    assert torch.equal(first.reset(seed=5), second.reset(seed=5))
    actions = torch.tensor([[0.3], [-0.7]])
    assert torch.equal(first.step(actions).obs, second.step(actions).obs)


def test_check_step_result_names_the_broken_field():
    env = TargetEnv(num_envs=2)
    env.reset(seed=0)
    good = env.step(torch.zeros(2, 1))
    check_step_result(env, good)
    bad = dataclasses.replace(good, terminated=torch.zeros(2))  # float instead of bool
    with pytest.raises(ValueError, match=r"StepResult\.terminated must be torch.bool"):
        check_step_result(env, bad)
    stale = dataclasses.replace(good, final_obs=good.obs + 1)  # no row is done
    with pytest.raises(ValueError, match="final_obs must equal"):
        check_step_result(env, stale)


# ---- training behaviour ----------------------------------------------------------------------------------


def test_sac_solves_the_identity_task_within_2000_steps():
    env = TargetEnv(num_envs=1)
    cfg = small_config(
        total_env_steps=2000, buffer_size=2000, batch_size=64, learning_starts=200, hidden_sizes=(64, 64)
    )
    module = SACModule(env, cfg)
    trainer = make_trainer()
    trainer.fit(module)
    assert module.env_steps == 2000
    assert module.num_updates == 1801  # one update per step from step 200 on (buffer ≥ batch by then)
    assert trainer.global_step == 3 * module.num_updates  # three optimiser steps per SAC update
    returns = evaluate_policy(module.act, TargetEnv(num_envs=4), num_episodes=16, seed=123)
    # a uniform random policy scores about -4.5 per 10-step episode; the optimum is 0
    assert returns.mean() > -1.0, f"mean |a - target| {-returns.mean() / 10:.3f} per step"
    assert module.alpha < 1.0  # the temperature moved toward the target entropy


def run_recorded(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    env = TargetEnv(num_envs=2)
    module = SACModule(env, small_config(seed=seed, total_env_steps=300))
    losses: list[torch.Tensor] = []

    class RecordLosses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.last_losses:
                losses.append(torch.stack([v.clone() for v in pl_module.last_losses.values()]))

    make_trainer(callbacks=[RecordLosses()]).fit(module)
    return torch.cat(env.actions_seen), losses


def test_same_seed_gives_identical_actions_and_losses():
    actions_a, losses_a = run_recorded(seed=7)
    torch.manual_seed(12345)  # the global RNG must not matter: the module draws from its own generators
    actions_b, losses_b = run_recorded(seed=7)
    # 150 batched steps of 2; updates run from the step that stores transition 100 (step 50) on
    assert actions_a.shape == (300, 1) and len(losses_a) == 101
    assert torch.equal(actions_a, actions_b)
    assert all(torch.equal(a, b) for a, b in zip(losses_a, losses_b, strict=True))
    actions_c, _ = run_recorded(seed=8)
    assert not torch.equal(actions_a, actions_c)


def test_a_diverging_loss_raises_a_clear_error():
    # finite but huge rewards: the squared TD error overflows float32 in the first update
    env = TargetEnv(num_envs=1, reward_fn=lambda r: r * 1e30)
    module = SACModule(env, small_config(total_env_steps=200, learning_starts=50))
    with pytest.raises(NonFiniteLossError, match=r"critic_loss.*NaN/Inf at env step 50 .*rewards"):
        make_trainer().fit(module)


def test_a_nan_gradient_with_finite_losses_stops_the_update_that_made_it():
    env = TargetEnv(num_envs=1)
    module = SACModule(env, small_config(total_env_steps=200, learning_starts=50))
    module.actor.mean.weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(
        NonFiniteLossError, match=r"SAC actor gradients became NaN/Inf at env step 50 \(update 1\)"
    ):
        make_trainer().fit(module)


def test_a_nan_reward_later_in_the_run_stops_it_at_that_step_with_the_checkpoint_intact(tmp_path):
    from agelatent.agent.callbacks import AtomicCheckpoint
    from agelatent.agent.sac import NonFiniteStepError

    steps = iter(range(10**6))
    env = TargetEnv(num_envs=2, reward_fn=lambda r: r * (float("nan") if next(steps) == 60 else 1.0))
    saver = AtomicCheckpoint(every_n_steps=10)
    with pytest.raises(
        NonFiniteStepError, match=r"NaN/Inf rewards \(rows \[0, 1\]\) at env step 122; nothing"
    ):
        make_trainer(callbacks=[saver], default_root_dir=str(tmp_path)).fit(SACModule(env, small_config()))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["sac"]["env_steps"] == 120  # the newest write before the bad step (every 10th batched step)


def test_a_nan_reward_is_caught_at_the_first_step():
    env = TargetEnv(num_envs=1, reward_fn=lambda r: r * float("nan"))
    with pytest.raises(ValueError, match=r"StepResult\.reward has NaN/Inf entries \(rows \[0\]\)"):
        make_trainer().fit(SACModule(env, small_config()))


# ---- checkpoints ---------------------------------------------------------------------------------------


def snapshot(module: SACModule, trainer: L.Trainer) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optim": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],  # Adam updates in place
        "env_steps": module.env_steps,
        "num_updates": module.num_updates,
        "alpha": module.alpha,
    }


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        for name, value in a["state"][key].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][key][name])), (key, name)


@pytest.mark.parametrize("checkpoint_replay", [False, True])
def test_checkpoint_round_trip_restores_everything_and_training_resumes(tmp_path, checkpoint_replay):
    cfg = small_config(total_env_steps=200, checkpoint_replay=checkpoint_replay)
    first = SACModule(TargetEnv(num_envs=2), cfg)
    trainer = make_trainer()
    trainer.fit(first)
    saved = snapshot(first, trainer)
    assert saved["env_steps"] == 200 and saved["num_updates"] == 51 and trainer.global_step == 153
    path = tmp_path / "sac.ckpt"
    trainer.save_checkpoint(path)

    # A module built from another seed, so nothing matches unless the checkpoint restores it.
    resumed = SACModule(TargetEnv(num_envs=2), dataclasses.replace(cfg, seed=1, total_env_steps=260))
    restored: dict = {}

    class CaptureOnResume(L.Callback):
        def on_train_start(self, trainer, pl_module):
            restored.update(snapshot(pl_module, trainer), replay_size=len(pl_module.replay))

    trainer2 = make_trainer(callbacks=[CaptureOnResume()])
    trainer2.fit(resumed, ckpt_path=path, weights_only=True)  # no pickle needed to resume

    assert restored["env_steps"] == 200 and restored["num_updates"] == 51
    assert restored["alpha"] == saved["alpha"]
    assert restored["state"].keys() == saved["state"].keys()
    for key in saved["state"]:  # actor, critic, critic_target, log_alpha
        assert torch.equal(restored["state"][key], saved["state"][key]), key
    for a, b in zip(saved["optim"], restored["optim"], strict=True):  # actor, critic, alpha optimisers
        assert_same_optimizer_state(a, b)
    assert restored["replay_size"] == (200 if checkpoint_replay else 0)

    assert resumed.env_steps == 260  # the counter continued from the checkpoint, not from zero
    # With the replay restored, updates continue at once (30 steps); without it the buffer refills on-policy
    # to batch_size=32 transitions (16 steps of 2) before updates resume (15 more steps).
    assert resumed.num_updates == 51 + (30 if checkpoint_replay else 15)
    assert trainer2.global_step == 3 * resumed.num_updates


def test_checkpoint_loads_for_evaluation_without_a_trainer(tmp_path):
    module = SACModule(TargetEnv(num_envs=2), small_config(total_env_steps=200))
    trainer = make_trainer()
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "sac.ckpt")
    loaded = SACModule.load_from_checkpoint(
        tmp_path / "sac.ckpt", env=TargetEnv(num_envs=2), weights_only=True
    )
    assert loaded.cfg == module.cfg and loaded.env_steps == 200
    obs = torch.linspace(-0.8, 0.8, 9)[:, None]
    assert torch.equal(loaded.act(obs), module.act(obs))


def test_resuming_a_finished_run_takes_no_further_step(tmp_path):
    module = SACModule(TargetEnv(num_envs=2), small_config(total_env_steps=120))
    trainer = make_trainer()
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "done.ckpt")
    env = TargetEnv(num_envs=2)
    resumed = SACModule(env, small_config(total_env_steps=120))
    make_trainer().fit(resumed, ckpt_path=tmp_path / "done.ckpt", weights_only=True)
    assert resumed.env_steps == 120 and env.actions_seen == []


def test_an_env_breaking_the_protocol_fails_on_its_first_step():
    class FloatFlags(TargetEnv):
        def step(self, actions):
            return dataclasses.replace(super().step(actions), truncated=torch.zeros(self.num_envs))

    with pytest.raises(ValueError, match=r"StepResult\.truncated must be torch.bool"):
        make_trainer().fit(SACModule(FloatFlags(num_envs=2), small_config()))


@pytest.mark.gpu
@pytest.mark.parametrize("env_device", ["cpu", "cuda"])
def test_trains_and_resumes_with_the_networks_on_cuda(tmp_path, env_device):
    cfg = small_config(total_env_steps=400)
    module = SACModule(TargetEnv(num_envs=4, device=env_device), cfg)
    trainer = make_trainer(accelerator="gpu")
    trainer.fit(module)
    assert module.actor.mean.weight.device.type == "cuda"
    assert module.replay.obs.device.type == env_device  # replay stays with the env, no host round trips
    assert module.num_updates == 76
    trainer.save_checkpoint(tmp_path / "sac.ckpt")
    resumed = SACModule(
        TargetEnv(num_envs=4, device=env_device), dataclasses.replace(cfg, total_env_steps=480)
    )
    make_trainer(accelerator="gpu").fit(resumed, ckpt_path=tmp_path / "sac.ckpt", weights_only=True)
    assert resumed.env_steps == 480
    obs = torch.linspace(-0.8, 0.8, 9, device=env_device)[:, None]
    assert resumed.act(obs).device.type == env_device
