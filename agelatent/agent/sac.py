"""Soft Actor-Critic as a Lightning module with manual optimisation, over the batched env protocol.

Reference: cleanrl ``sac_continuous_action.py`` (update order; its hyperparameters are
``conf/agent/sac_cleanrl.yaml``); deviations are named where they happen. One ``training_step`` = one batched env step (``num_envs`` transitions, uniform random
actions during warm-up, the current stochastic policy after) followed by ``updates_per_step`` SAC updates
(critic, actor, temperature, Polyak). Lightning's ``global_step`` therefore counts optimiser steps (three
per update); the project's x-axis is the environment-step counter :attr:`SACModule.env_steps`
(transitions collected), logged as the metric ``env_step``.

Training stops by itself after ``SACConfig.total_env_steps`` transitions (``Trainer.max_steps`` still
caps optimiser steps). The module serves its own endless dummy dataloader, so a run is::

    module = SACModule(env, SACConfig(...))
    Trainer(logger=..., callbacks=[...]).fit(module)             # or fit(module, ckpt_path=...)

Checkpoints hold actor, critics, target critics, log α, the three optimisers (Lightning's
``optimizer_states``), the env-step and update counters and the two RNG states. The replay buffer is
*excluded* by default (``SACConfig.checkpoint_replay``): at paper scale it is gigabytes. A run resumed
without it keeps its env-step counter, skips the random warm-up, and resumes updates once ``batch_size``
fresh on-policy transitions are in the buffer, so from the resume on it differs from an uninterrupted run
(other transitions are sampled into the updates). An environment with ``state_dict``/``load_state_dict``
(the latent age MDP) is checkpointed with its episodes in progress, their observations and the episode
statistics window, so those episodes continue where they were; with the replay buffer as well, a resumed
run repeats an uninterrupted one exactly (CPU; tested). Environments without them start fresh episodes on
resume (seeded from ``seed + env_steps``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from agelatent.agent.networks import SquashedGaussianActor, TwinQ, polyak_update
from agelatent.agent.replay import ReplayBuffer
from agelatent.config import from_mapping, to_dict
from agelatent.env.batched import BatchedEnv, check_observation, check_step_result, nonfinite_rows

__all__ = [
    "NonFiniteLossError",
    "NonFiniteStepError",
    "SACConfig",
    "SACModule",
    "evaluate_policy",
    "sac_trainer",
]


class NonFiniteStepError(FloatingPointError):
    """The environment returned NaN/Inf rewards or observations during training; nothing from that step was
    stored or learned from, and the newest checkpoint is the one before it."""


class NonFiniteLossError(FloatingPointError):
    """A SAC loss became NaN/Inf; the message names the loss, the env step and the update."""


@dataclass(frozen=True, kw_only=True)
class SACConfig:
    """SAC hyperparameters. No defaults here: the values live in ``conf/agent/`` (``sac.yaml`` for this
    project, ``sac_cleanrl.yaml`` for CleanRL's); build with :meth:`from_config`."""

    seed: int
    total_env_steps: int  # transitions to collect, then training stops (cleanrl total_timesteps)
    buffer_size: int
    gamma: float
    tau: float
    batch_size: int
    learning_starts: int  # transitions of uniform random actions before the first update
    # Gradient updates per training_step, i.e. per batched env step of num_envs transitions: the
    # update-to-data ratio is updates_per_step / num_envs. (cleanrl: 1 update per vector step.)
    updates_per_step: int
    policy_lr: float
    q_lr: float
    alpha_lr: float  # cleanrl reuses q_lr for the temperature optimiser
    hidden_sizes: tuple[int, ...]
    init_alpha: float
    target_entropy: float | None  # None: −action_dim (cleanrl, SB3)
    log_std_min: float
    log_std_max: float
    zero_init_mean: (
        bool  # the actor's mean layer starts at zero: the untrained deterministic policy acts a = 0
    )
    checkpoint_replay: bool  # store the filled replay rows in checkpoints (exact resume)
    episode_stats_window: int  # completed episodes averaged in rollout/* metrics

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SACConfig:
        """From a composed train config: the ``agent`` group and the run's top-level ``seed``."""
        return from_mapping(cls, {**to_dict(cfg["agent"]), "seed": int(cfg["seed"])}, "agent")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        self._validate()

    def _validate(self) -> None:
        def fail(name: str, rule: str, fix: str) -> None:
            raise ValueError(f"SACConfig.{name} {rule}, got {getattr(self, name)!r}: {fix}")

        for name in (
            "total_env_steps",
            "buffer_size",
            "batch_size",
            "updates_per_step",
            "episode_stats_window",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "must be an integer >= 1", "pass a positive count")
        for name in ("seed", "learning_starts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(name, "must be an integer >= 0", "pass a non-negative count")
        if self.batch_size > self.buffer_size:
            fail(
                "batch_size",
                f"must not exceed buffer_size={self.buffer_size}",
                "raise buffer_size or lower it",
            )
        if self.learning_starts >= self.total_env_steps:
            fail(
                "learning_starts",
                f"must be below total_env_steps={self.total_env_steps} (no update would ever run)",
                "lower it or raise total_env_steps",
            )
        if not 0.0 <= self.gamma < 1.0:
            fail("gamma", "must be in [0, 1)", "use a discount such as 0.99")
        if not 0.0 < self.tau <= 1.0:
            fail("tau", "must be in (0, 1]", "use a Polyak rate such as 0.005 (1 = hard copy)")
        for name in ("policy_lr", "q_lr", "alpha_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                fail(name, "must be a finite number > 0", "use a learning rate such as 3e-4")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            fail("hidden_sizes", "must be a non-empty list of widths >= 1", "use e.g. [256, 256]")
        if not (math.isfinite(self.init_alpha) and self.init_alpha > 0):
            fail("init_alpha", "must be a finite number > 0", "use 1.0 (cleanrl) or e.g. 0.2")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            fail("target_entropy", "must be finite or None", "use None for −action_dim")
        if not self.log_std_min < self.log_std_max:
            fail("log_std_min", f"must be below log_std_max={self.log_std_max}", "use e.g. -5 and 2")


class _EnvTicks(IterableDataset):
    """Endless dummy items: each one makes Lightning call ``training_step`` (= one batched env step)."""

    def __iter__(self):
        while True:
            yield 0


class SACModule(L.LightningModule):
    """SAC over any :class:`~agelatent.env.batched.BatchedEnv` (see the module docstring)."""

    def __init__(self, env: BatchedEnv, cfg: SACConfig | Mapping[str, Any]) -> None:
        super().__init__()
        cfg = SACConfig(**cfg) if isinstance(cfg, Mapping) else cfg
        for name in ("num_envs", "observation_dim", "action_dim"):
            if not int(getattr(env, name)) >= 1:
                raise ValueError(f"env.{name} must be >= 1, got {getattr(env, name)!r}")
        if env.num_envs > cfg.buffer_size:
            raise ValueError(
                f"SACConfig.buffer_size={cfg.buffer_size} is smaller than one batched env step "
                f"(num_envs={env.num_envs}): raise buffer_size"
            )
        self.automatic_optimization = False
        self.cfg = cfg
        self.env = env
        self.save_hyperparameters({"cfg": asdict(cfg)})
        self.target_entropy = float(-env.action_dim if cfg.target_entropy is None else cfg.target_entropy)

        # Initialise from the config's seed, not from whatever the global RNG happens to hold.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.actor = SquashedGaussianActor(
                env.observation_dim, env.action_dim, cfg.hidden_sizes, cfg.log_std_min, cfg.log_std_max
            )
            if cfg.zero_init_mean:
                torch.nn.init.zeros_(self.actor.mean.weight)
                torch.nn.init.zeros_(self.actor.mean.bias)
            self.critic = TwinQ(env.observation_dim, env.action_dim, cfg.hidden_sizes)
            self.critic_target = TwinQ(env.observation_dim, env.action_dim, cfg.hidden_sizes)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))

        self.env_steps = 0  # transitions collected (the logging x-axis)
        self.num_updates = 0  # SAC updates done (each = 3 optimiser steps = 3 global_step)
        self.replay: ReplayBuffer | None = None  # allocated on fit start, on the env's device
        self._rng: torch.Generator | None = None  # policy noise and warm-up actions
        self._pending: dict[str, Any] = {}  # checkpoint state applied once fit has built its buffers
        self._pending_env: dict[str, Any] = {}  # the checkpoint's episodes in progress, for on_train_start
        self._demonstrations: tuple[torch.Tensor, ...] | None = None  # for the replay buffer, on fit start
        self._obs: torch.Tensor | None = None
        self._check_next_step = True
        self._returns: deque[float] = deque(maxlen=cfg.episode_stats_window)
        self._lengths: deque[int] = deque(maxlen=cfg.episode_stats_window)
        self._episodes = 0
        # losses and statistics of the latest update (critic, actor, alpha, q, entropy)
        self.last_losses: dict[str, torch.Tensor] = {}
        self._clock: tuple[float, int, int] | None = None

    # ---- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions ``[B, act_dim]`` in ``[-1, 1]`` for ``obs [B, obs_dim]``, on ``obs``'s device.

        ``deterministic=True`` (evaluation) returns the squashed mean; otherwise a policy sample.
        """
        x = obs.to(self.device, torch.float32)
        actions = self.actor.deterministic(x) if deterministic else self.actor.sample(x, generator)[0]
        return actions.to(obs.device)

    def add_demonstrations(self, transitions) -> None:
        """Transitions this policy did not collect (a teacher's: :class:`~agelatent.agent.imitation.Demonstrations`;
        any object with the replay buffer's fields), put into the replay buffer when fit starts, before the
        first env step. They do not count as env steps; beyond ``buffer_size``, the newest are kept."""
        if self.replay is not None and len(self.replay):
            raise RuntimeError("demonstrations go into an empty replay buffer: add them before fit starts")
        self._demonstrations = tuple(
            getattr(transitions, name)[-self.cfg.buffer_size :] for name in ReplayBuffer.FIELDS
        )

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    # ---- Lightning hooks ----------------------------------------------------------------------------
    def configure_optimizers(self):
        # Adam with PyTorch defaults for all three, as cleanrl and SB3.
        return [
            torch.optim.Adam(self.actor.parameters(), lr=self.cfg.policy_lr, fused=True),
            torch.optim.Adam(self.critic.parameters(), lr=self.cfg.q_lr, fused=True),
            torch.optim.Adam([self.log_alpha], lr=self.cfg.alpha_lr, fused=True),
        ]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_EnvTicks(), batch_size=None)

    def on_fit_start(self) -> None:
        env, cfg = self.env, self.cfg
        if self.replay is None:
            self.replay = ReplayBuffer(
                cfg.buffer_size, env.observation_dim, env.action_dim, env.device, seed=cfg.seed + 1
            )
        if self._rng is None or self._rng.device != self.device:
            self._rng = torch.Generator(device=self.device).manual_seed(cfg.seed)
        if "rng" in self._pending and self._pending["rng_device"] == str(self.device):
            self._rng.set_state(self._pending["rng"])
        if "replay" in self._pending:
            self.replay.load_state_dict(self._pending["replay"])
        elif "replay_generator" in self._pending:
            self.replay.generator.set_state(self._pending["replay_generator"])
        self._pending = {}
        if self._demonstrations is not None:
            self.replay.add(*(rows.to(env.device) for rows in self._demonstrations))
            self._demonstrations = None

    def on_train_start(self) -> None:
        if self.env_steps >= self.cfg.total_env_steps:  # e.g. resumed from the final checkpoint
            self.trainer.should_stop = True
            return
        pending, self._pending_env = self._pending_env, {}
        if "env" in pending and hasattr(self.env, "load_state_dict"):  # resumed: the episodes go on
            self.env.load_state_dict(pending["env"])
            self._obs = pending["obs"].to(self.env.device)
        else:
            self._obs = self.env.reset(seed=self.cfg.seed + self.env_steps)
        check_observation(self.env, self._obs, "env.reset() result")
        self._check_next_step = True
        self._clock = (time.perf_counter(), self.env_steps, self.num_updates)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        cfg, env = self.cfg, self.env
        obs = self._obs
        if self.env_steps < cfg.learning_starts:  # warm-up: uniform in the unit box (cleanrl, SB3)
            actions = torch.rand(env.num_envs, env.action_dim, generator=self._rng, device=self.device)
            actions = (2.0 * actions - 1.0).to(env.device)
        else:
            actions = self.act(obs, deterministic=False, generator=self._rng)
        result = env.step(actions)
        if self._check_next_step:  # a protocol slip fails here, clearly, not as a shape error in an update
            check_step_result(env, result)
            self._check_next_step = False
        self._check_finite_step(result)
        # final_obs, not obs: on rows that just ended, obs already belongs to the next episode.
        self.replay.add(obs, actions, result.reward, result.final_obs, result.terminated)
        self._obs = result.obs
        self.env_steps += env.num_envs
        self.record_episodes(result)

        if self.env_steps >= cfg.learning_starts and len(self.replay) >= cfg.batch_size:
            for _ in range(cfg.updates_per_step):
                self.last_losses = self.update()
        finished = self.env_steps >= cfg.total_env_steps
        if finished or self.logging_due():
            self.log_step(result.info)
        if finished:
            self.trainer.should_stop = True

    def _check_finite_step(self, result) -> None:
        """Every batched step: NaN/Inf in the rewards or observations stops the run at this step, before the
        transition reaches the replay buffer (one host sync)."""
        parts = {"rewards": result.reward, "observations": result.obs, "final observations": result.final_obs}
        flags = torch.stack([torch.isfinite(v).all() for v in parts.values()])
        if bool(flags.all()):
            return
        bad = [
            f"{name} (rows {nonfinite_rows(value)})"
            for (name, value), ok in zip(parts.items(), flags.tolist(), strict=True)
            if not ok
        ]
        raise NonFiniteStepError(
            f"the environment returned NaN/Inf {', '.join(bad)} at env step {self.env_steps + self.env.num_envs}; "
            "nothing from this step was stored or learned from and the newest checkpoint is as it was: find "
            "the reward term or score that produced it, then resume"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {"env_steps": self.env_steps, "num_updates": self.num_updates}
        state["episodes"] = self._episodes
        if self._rng is not None:
            state["rng"], state["rng_device"] = self._rng.get_state(), str(self._rng.device)
        if self._obs is not None and hasattr(self.env, "state_dict"):  # episodes continue on resume
            state["env"], state["obs"] = self.env.state_dict(), self._obs.detach().cpu()
            state["episode_window"] = {"returns": list(self._returns), "lengths": list(self._lengths)}
        if self.replay is not None:
            if self.cfg.checkpoint_replay:
                state["replay"] = self.replay.state_dict()
            else:
                state["replay_generator"] = self.replay.generator.get_state()
        checkpoint["sac"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["sac"]
        self.env_steps, self.num_updates = int(state["env_steps"]), int(state["num_updates"])
        self._episodes = int(state["episodes"])
        self._pending = {
            k: v for k, v in state.items() if k in ("rng", "rng_device", "replay", "replay_generator")
        }
        self._pending_env = {k: state[k] for k in ("env", "obs") if k in state}
        window = state.get("episode_window", {"returns": [], "lengths": []})
        self._returns = deque(window["returns"], maxlen=self.cfg.episode_stats_window)
        self._lengths = deque(window["lengths"], maxlen=self.cfg.episode_stats_window)
        self.replay = None  # (re)built on fit start: empty, or filled from the checkpoint

    # ---- the SAC update -----------------------------------------------------------------------------
    def update(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        actor_opt, critic_opt, alpha_opt = self.optimizers()
        data = self.replay.sample(cfg.batch_size).to(self.device)
        alpha = self.log_alpha.detach().exp()

        # Critic: soft clipped-double-Q target; bootstrap unless the MDP terminated (truncation bootstraps).
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(data.next_obs, self._rng)
            next_q = self.critic_target.min_q(data.next_obs, next_actions) - alpha * next_log_prob
            target_q = data.rewards + cfg.gamma * (1.0 - data.terminated) * next_q
        q1, q2 = self.critic(data.obs, data.actions)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        critic_grad = self._descend(critic_opt, critic_loss, self.critic)

        # Actor: every update, not delayed — cleanrl trains the actor every policy_frequency=2 updates
        # (twice, to compensate); SB3 every update. Critic parameters are frozen for this backward only
        # to skip their unused weight gradients.
        self.critic.requires_grad_(False)
        actions, log_prob = self.actor.sample(data.obs, self._rng)
        actor_loss = (alpha * log_prob - self.critic.min_q(data.obs, actions)).mean()
        actor_grad = self._descend(actor_opt, actor_loss, self.actor)
        self.critic.requires_grad_(True)

        # Temperature: reuses the actor step's log π (detached), as SB3; cleanrl draws a fresh sample.
        alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
        alpha_opt.zero_grad()
        self.manual_backward(alpha_loss)
        alpha_opt.step()

        polyak_update(self.critic.parameters(), self.critic_target.parameters(), cfg.tau)
        self.num_updates += 1

        losses = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss}
        watched = {**losses, "critic gradients": critic_grad, "actor gradients": actor_grad}
        stacked = torch.stack([v.detach() for v in watched.values()])
        if not torch.isfinite(stacked).all():  # one host sync per update, losses and gradient norms together
            bad = [k for k, v in zip(watched, stacked.tolist(), strict=True) if not math.isfinite(v)]
            raise NonFiniteLossError(
                f"SAC {', '.join(bad)} became NaN/Inf at env step {self.env_steps} "
                f"(update {self.num_updates}): "
                "check the environment's rewards and observations for NaN/Inf or very large values, "
                "or lower q_lr/policy_lr; resume from the last checkpoint once fixed"
            )
        return {
            **{k: v.detach() for k, v in losses.items()},
            "q_mean": torch.minimum(q1, q2).detach().mean(),
            "entropy": -log_prob.detach().mean(),
        }

    # ---- bookkeeping --------------------------------------------------------------------------------
    def _descend(self, optimizer, loss: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        """One optimiser step on ``loss``; returns the gradient norm of ``module``'s parameters (for the
        update's NaN check and its metrics)."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        norm = torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])
        optimizer.step()
        return norm

    def record_episodes(self, result) -> None:
        done = result.done
        if not bool(done.any()):
            return
        self._returns.extend(result.episode_return[done].tolist())
        self._lengths.extend(result.episode_length[done].tolist())
        self._episodes += int(done.sum())

    def every_n_batched_steps(self, n: int) -> bool:
        """True on the batched env steps that are multiples of ``n``, counted from env step 0 (so a resumed
        run acts on the same steps): the cadence of logging and checkpointing."""
        return (self.env_steps // self.env.num_envs) % max(int(n), 1) == 0

    def logging_due(self) -> bool:
        """True every ``Trainer.log_every_n_steps`` batched env steps; nothing is computed for logging on
        the other steps."""
        return self.every_n_batched_steps(self.trainer.log_every_n_steps)

    def log_metrics(self, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Write ``metrics`` (plus ``env_step``) to every logger, with the env-step counter as the step.

        Goes straight to the loggers' public ``log_metrics``: the x-axis is env steps, not Lightning's
        ``global_step`` (three optimiser steps per update), and nothing is buffered per metric.
        """
        tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
        values = {k: float(v) for k, v in metrics.items() if k not in tensors}
        if tensors:  # one device-to-host copy for all of them
            stacked = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()
            values.update(zip(tensors, stacked, strict=True))
        values["env_step"] = float(self.env_steps)
        for logger in self.loggers:
            logger.log_metrics(values, step=self.env_steps)

    def log_step(self, info: Mapping[str, torch.Tensor]) -> None:
        metrics: dict[str, Any] = {
            "train/updates": float(self.num_updates),
            "train/alpha": self.log_alpha.detach().exp(),
            "rollout/episodes": float(self._episodes),
        }
        metrics.update({f"train/{k}": v for k, v in self.last_losses.items()})
        if self._returns:
            metrics["rollout/episode_return"] = sum(self._returns) / len(self._returns)
            metrics["rollout/episode_length"] = sum(self._lengths) / len(self._lengths)
        for key, value in info.items():
            if value.ndim == 1 and value.is_floating_point():
                metrics[f"env/{key}"] = value.detach().mean()
        if self._clock is not None:
            start, steps0, updates0 = self._clock
            elapsed = max(time.perf_counter() - start, 1e-9)
            metrics["time/env_steps_per_s"] = (self.env_steps - steps0) / elapsed
            metrics["time/updates_per_s"] = (self.num_updates - updates0) / elapsed
        self.log_metrics(metrics)


@torch.no_grad()
def evaluate_policy(
    act: Callable[[torch.Tensor], torch.Tensor],
    env: BatchedEnv,
    num_episodes: int,
    seed: int | None = None,
    max_batched_steps: int = 100_000,
) -> torch.Tensor:
    """Undiscounted returns ``[num_episodes]`` (CPU) of ``act`` (obs → actions in [-1, 1]) on ``env``.

    Each row contributes a fixed quota of episodes (as SB3's ``evaluate_policy``) so short episodes do
    not crowd out long ones. Use an env instance that is not being trained on: this resets it.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    rows = env.num_envs
    quota = torch.tensor([(num_episodes + i) // rows for i in range(rows)], device=env.device)
    counts = torch.zeros(rows, dtype=torch.long, device=env.device)
    returns: list[torch.Tensor] = []
    obs = env.reset(seed=seed)
    for _ in range(max_batched_steps):
        if bool((counts >= quota).all()):
            return torch.cat(returns).cpu()
        result = env.step(act(obs))
        take = result.done & (counts < quota)
        returns.append(result.episode_return[take])
        counts += result.done.long()
        obs = result.obs
    raise RuntimeError(
        f"evaluate_policy: {num_episodes} episodes did not finish within {max_batched_steps} steps"
    )


def quiet_lightning() -> None:
    """Keep Lightning's start-up notices (accelerators found, an advertisement for its cloud logger) and a
    deprecation notice from its pytree helper, which a user can do nothing about, off the console: the job
    prints its own line with the device and the run's sizes. Also its advice to prepend ``srun`` wherever
    ``srun`` is installed: a job on one device needs no ``srun``, and on a cluster the SLURM launcher
    (``hydra/launcher=slurm``) already runs the job under SLURM. Other warnings and errors still show."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings(
        "ignore", message=r"The `srun` command is available on your system but is not used"
    )


def sac_trainer(**overrides: Any) -> L.Trainer:
    """A Lightning ``Trainer`` for :class:`SACModule`: no epoch limit (the module stops itself after
    ``total_env_steps``), no validation, and none of Lightning's default logger, checkpointing, progress bar
    or model summary; ``overrides`` set those (and the accelerator) where a caller wants them."""
    quiet_lightning()
    settings: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**settings, **overrides})
