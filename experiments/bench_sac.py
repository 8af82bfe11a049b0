"""Benchmark: SAC gradient updates per second, agelatent's ``SACModule`` vs stable-baselines3's ``SAC``.

    python experiments/bench_sac.py [--batch 256] [--hidden 256 256] [--updates 200] [--rounds 5]
        [--threads 2] [--json PATH]

Everything that sets the cost of an update is the same on both sides: observation and action sizes (the
default MDP's, from ``conf/train.yaml``, unless ``--obs-dim``/``--act-dim`` are given), actor and twin-critic
hidden sizes, batch size, thread count, automatic entropy tuning, and the replay buffer's contents (our
buffer's transitions are copied into SB3's). Our updates run inside a real ``Trainer.fit`` (Lightning's
manual optimisation included); after each of our rounds of ``--updates`` updates, SB3 runs as many through
its public ``SAC.train(gradient_steps, batch_size)``, so the rounds alternate in one process and both sides
see the same machine load; our last round runs under torch.profiler, and the share of its time in matrix
multiplies (the work SB3 does too) is reported: it bounds what any overhead cut can gain. The environment is a stand-in that returns random transitions: only the updates
are timed. stable-baselines3 is a dev-only dependency (``.[dev]``); the package never imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from agelatent.agent.sac import SACConfig, SACModule, sac_trainer
from agelatent.config import compose_config
from agelatent.env.batched import StepResult

_NUM_ENVS = 32
#: the dense layers' kernels: the work both implementations must do (same sizes, same batch)
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")


class _RandomTransitions:
    """A :class:`~agelatent.env.batched.BatchedEnv` of random transitions (nothing to learn; cheap)."""

    def __init__(self, observation_dim: int, action_dim: int, seed: int = 0) -> None:
        self.num_envs, self.observation_dim, self.action_dim = _NUM_ENVS, observation_dim, action_dim
        self.device = torch.device("cpu")
        self._rng = torch.Generator().manual_seed(seed)

    def _obs(self) -> torch.Tensor:
        return torch.randn(self.num_envs, self.observation_dim, generator=self._rng)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self._rng.manual_seed(seed)
        return self._obs()

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, n = self._obs(), self.num_envs
        return StepResult(
            obs=obs,
            final_obs=obs,
            reward=torch.randn(n, generator=self._rng),
            terminated=torch.rand(n, generator=self._rng) < 0.05,
            truncated=torch.zeros(n, dtype=torch.bool),
            episode_return=torch.zeros(n),
            episode_length=torch.ones(n, dtype=torch.int64),
        )


def _sb3_model(env_dims: tuple[int, int], cfg: SACConfig):
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    obs_dim, act_dim = env_dims

    class Spaces(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    model = SAC(
        "MlpPolicy",
        Spaces(),
        learning_rate=cfg.policy_lr,
        buffer_size=cfg.buffer_size,
        batch_size=cfg.batch_size,
        tau=cfg.tau,
        gamma=cfg.gamma,
        ent_coef="auto",
        policy_kwargs={"net_arch": {"pi": list(cfg.hidden_sizes), "qf": list(cfg.hidden_sizes)}},
        device="cpu",
        seed=cfg.seed,
    )
    model.set_logger(configure(None, []))
    return model


def _copy_replay(ours, sb3_buffer) -> None:
    """Our replay buffer's filled rows into SB3's (its arrays are [buffer_size, n_envs=1, dim])."""
    n = len(ours)
    sb3_buffer.observations[:n, 0] = ours.obs[:n].numpy()
    sb3_buffer.next_observations[:n, 0] = ours.next_obs[:n].numpy()
    sb3_buffer.actions[:n, 0] = ours.actions[:n].numpy()
    sb3_buffer.rewards[:n, 0] = ours.rewards[:n].numpy()
    sb3_buffer.dones[:n, 0] = ours.terminated[:n].numpy()
    sb3_buffer.pos, sb3_buffer.full = n % sb3_buffer.buffer_size, n >= sb3_buffer.buffer_size


class _Alternate(L.Callback):
    """After each of our rounds of updates, one SB3 round of as many updates, timed the same way."""

    def __init__(self, cfg: SACConfig, dims: tuple[int, int]) -> None:
        self.cfg, self.dims = cfg, dims
        self.ours: list[float] = []
        self.sb3: list[float] = []
        self._model = None
        self._updates_before = 0
        self._seconds = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if module.env_steps >= module.cfg.total_env_steps - module.env.num_envs:  # the last round: profiled
            self._profile = torch.profiler.profile()
            self._profile.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if getattr(self, "_profile", None) is not None:
            self._profile.__exit__(None, None, None)
            events = self._profile.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
            self.matmul_share = matmul / total
            self._profile = None
        done = module.num_updates - self._updates_before
        if done == 0:
            return
        self.ours.append(done / self._seconds)
        self._updates_before, self._seconds = module.num_updates, 0.0
        if self._model is None:
            self._model = _sb3_model(self.dims, self.cfg)
            _copy_replay(module.replay, self._model.replay_buffer)
            self._model.train(gradient_steps=2, batch_size=self.cfg.batch_size)  # warm-up
        start = time.perf_counter()
        self._model.train(gradient_steps=done, batch_size=self.cfg.batch_size)
        self.sb3.append(done / (time.perf_counter() - start))


def run(obs_dim: int, act_dim: int, batch: int, hidden: list[int], updates: int, rounds: int) -> dict:
    fill = max(batch, 4096)  # transitions in both buffers before the first update
    # the project's SAC settings (conf/agent/sac.yaml), with the bench's batch, sizes and schedule
    cfg = dataclasses.replace(
        SACConfig.from_config(compose_config("train")),
        total_env_steps=fill + _NUM_ENVS * rounds,  # rounds + 1 steps with updates (the first warms up)
        batch_size=batch,
        learning_starts=fill,
        updates_per_step=updates,
        hidden_sizes=tuple(hidden),
    )
    module = SACModule(_RandomTransitions(obs_dim, act_dim), cfg)
    alternate = _Alternate(cfg, (obs_dim, act_dim))
    update = module.update

    def timed_update():
        start = time.perf_counter()
        out = update()
        alternate._seconds += time.perf_counter() - start
        return out

    module.update = timed_update
    sac_trainer(callbacks=[alternate]).fit(module)
    ours, sb3 = alternate.ours[1:], alternate.sb3[1:]  # the first round of each warms up
    return {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "batch": batch,
        "hidden": hidden,
        "updates_per_round": updates,
        "rounds": len(ours),
        "ours_updates_per_s": statistics.median(ours),
        "sb3_updates_per_s": statistics.median(sb3),
        "speedup": statistics.median(o / s for o, s in zip(ours, sb3, strict=True)),
        # share of our last round's CPU time in matrix multiplies (torch.profiler): what no overhead cut removes
        "matmul_share": alternate.matmul_share,
    }


def _default_dims() -> tuple[int, int]:
    from agelatent.env.latent_age import LatentAgeEnv
    from agelatent.world import build_world

    cfg = compose_config("train", ["device=cpu"])
    env = LatentAgeEnv.from_config(build_world(cfg), cfg)
    return env.observation_dim, env.action_dim


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--obs-dim", type=int, default=None)
    parser.add_argument("--act-dim", type=int, default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--updates", type=int, default=200, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (plus one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    obs_dim, act_dim = (args.obs_dim, args.act_dim) if args.obs_dim and args.act_dim else _default_dims()
    result = {
        "threads": args.threads,
        **run(obs_dim, act_dim, args.batch, args.hidden, args.updates, args.rounds),
    }
    print(
        f"SAC updates/s at batch {args.batch}, hidden {args.hidden}, obs {obs_dim}, act {act_dim}, "
        f"{args.threads} threads: agelatent {result['ours_updates_per_s']:.1f}, stable-baselines3 "
        f"{result['sb3_updates_per_s']:.1f} -> {result['speedup']:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
