"""The latent age-editing MDP (docs/design.md, "The MDP"), batched over ``num_envs`` episodes on the world's device.

State (observation, float32, in this order; ``d`` = latent dim):

* with ``env.observe_latent`` (on with ``action=full`` and ``action=semantic``): ``z`` (``d``, the current latent; standard-normal prior, so already
  unit-scaled) and ``(z - z0) * offset_scale`` (``d``): how far the edit has moved from the start face;
* ``‖z - z0‖`` and ``10 (ρ - 1)``: the size of the edit and its distance from the prior's typical set, with
  ρ the latent's distance from the typical set's centre in units of its radius (``World.typical_set()``;
  the standard normal's: ``‖z‖/√d``; averaged over blocks for StyleGAN2's W+);
* ``(target - c) / s``, ``(age - c) / s``, ``(target - age) / s``: target and current age, with ``c`` the
  middle of the perception's ``age_range`` and ``s`` a quarter of its width (embedded world: 40 and 20);
* ``similarity`` and ``(similarity - hard_bound) / (1 - hard_bound)``: identity to the start face;
* ``t / max_steps``: the step fraction;
* ``local_linear`` and ``levers`` actions: ``log10 |ĝ|`` (steepness of the local age direction, years per unit),
  then ``log10 |c_j|`` for each kept quantity's gradient (``action.keep``);
* with ``env.observe_face``: what the face is and how it has changed -- ``P(male)``, ``P(male) - P0(male)``
  and the identity embedding's offset from the start face ``(e - e0) * offset_scale`` (the perception's
  ``identity_dim`` numbers).

Actions are in ``[-1, 1]`` and mapped to a latent displacement Δz:

* ``full``: Δz = ``full_step_size`` · a (``action_dim = d``);
* ``semantic``: Δz = ``semantic_step_size`` · Σ_k a_k b_k over the semantic walk's orthonormal basis
  (:func:`~agelatent.world.directions.semantic_basis`: the ridge age direction and the generator's strongest
  closed-form directions; ``action_dim = k``). Like ``full``, it needs no gradients;
* ``local_linear``: ``a[0]`` asks for ``a[0] · max_years_per_step`` years along the local age direction
  (the minimum-norm step δ = Δ·ĝ/‖ĝ‖², norm-capped at ``max_step_norm``), and ``a[1:]`` (``K``
  numbers) add ``correction_scale · Σ a_k b_k`` with ``b_k`` an orthonormal basis of a fixed random
  K-dimensional subspace projected orthogonal to ĝ: to first order they change the face without
  changing its age, which is what the policy can use to keep identity. ``action_dim = 1 + K``.
  With ``action.keep`` (``identity``, ``gender``), the age step is the minimum-norm step that also keeps
  those quantities to first order (J = [ĝ; ∇‖e − e0‖²; ∇P(male)], see
  :func:`~agelatent.env.local_linear.constrained_min_norm_step`) and the corrections live in J's null
  space instead of orthogonal to ĝ alone. The gradients come from the same world call (one backward
  pass per row of J).
  With ``action.residual``, ``a[0]`` corrects the walk instead of replacing it: the step asks for
  ``clip(target − age + a[0] · max_years_per_step, ±max_years_per_step)`` years, so ``a = 0`` is exactly
  the local-linear walk's step (with ``agent.zero_init_mean`` the untrained policy starts there).
* ``levers``: the policy sets three levers of the walk's step instead of the step itself
  (``action_dim = 3``); the step asks for ``s · (target − age)`` years, clipped to ``±s · max_years_per_step``:

  - ``a[0]``, the identity stiffness λ = (1 + ``max_stiffness``)^((a+1)/2) − 1 (0 at a = −1): the step is the
    smallest in the metric ‖δ‖² + λ‖J_e δ‖² that makes the age change and keeps ``action.keep`` to first
    order, J_e the identity embedding's Jacobian sketched by ``identity_sketch`` random vector-Jacobian
    products at each scored latent (:func:`~agelatent.env.local_linear.stiff_min_norm_step`);
  - ``a[1]``, the mix β = (a+1)/2: (1 − β) x that step + β x the minimum-norm step for the same years within
    the semantic walk's basis;
  - ``a[2]``, the step scale s = ``max_scale``^a: the request and the norm cap ``max_step_norm`` times s.

  a = 0 is λ = √(1 + max_stiffness) − 1, β = 0.5, s = 1. The observation says what each lever will do (three
  numbers after the ``local_linear`` ones): ``log10`` of the years per latent unit within the semantic basis,
  and ``log10`` of the identity embedding's predicted movement per year of the plain step and of the
  semantic step (sketched); the identity budget left, the years left and the steps left are in every
  observation.

Transition: z' = z + Δz, then optionally radially clamped into the prior's typical set
(ρ within ``1 ± typical_set_tolerance``, :meth:`~agelatent.generators.TypicalSet.clamp`). Termination: success when |age − target| ≤
``success_tolerance_years`` with similarity ≥ the hard bound; failure when similarity < the hard bound;
truncation at ``max_steps``. The reward is a :class:`~agelatent.env.rewards.Reward`.

One world call per step scores all ``B`` new latents (images, ages, identity, gender); with
``local_linear`` actions and ``age_direction.method=autograd`` the same call also yields ĝ at the new
latents (one backward pass through the age branch), so the next step needs no extra forward.

Two ways to drive it: :meth:`LatentAgeEnv.step` (actions, the RL protocol, auto-reset) and
:meth:`LatentAgeEnv.step_latent` (a raw Δz, for baseline editors); :meth:`LatentAgeEnv.reset_to` starts
given faces with given targets and, with ``auto_reset=False``, freezes rows that finish (evaluation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from agelatent.config import from_mapping, to_dict
from agelatent.env.batched import StepResult
from agelatent.env.local_linear import (
    AgeDirectionConfig,
    cap_norm,
    constrained_min_norm_step,
    local_age_gradient,
    min_norm_step,
    null_space_basis,
    orthogonal_basis,
    stiff_min_norm_step,
)
from agelatent.env.outcome import Outcome
from agelatent.env.rewards import Reward, Transition
from agelatent.env.targets import TargetConfig
from agelatent.perception.base import check_finite

__all__ = [
    "ACTION_MODES",
    "MDP_GROUPS",
    "ActionConfig",
    "IdentityConfig",
    "LatentAgeEnv",
    "LatentAgeEnvConfig",
]

ACTION_MODES = ("full", "local_linear", "semantic", "levers")
#: the modes whose steps follow the local age direction (the env tracks ĝ and the kept gradients)
LOCAL_MODES = ("local_linear", "levers")
#: quantities a local_linear step can keep fixed to first order (``action.keep``)
KEEPABLE = ("identity", "gender")
#: the config groups that define the MDP (a policy is evaluated under its run's values of these)
MDP_GROUPS = ("env", "action", "identity", "target")


@dataclass(frozen=True, kw_only=True)
class SemanticBasisConfig:
    """The basis of ``action.mode=semantic`` (:func:`~agelatent.world.directions.semantic_basis`)."""

    num_directions: int  # the generator's strongest closed-form directions
    age_direction: bool  # and the global ridge age direction
    num_samples: int  # latents the ridge direction is fitted on
    first_seed: int  # from this seed (splits.direction_fit)

    def __post_init__(self) -> None:
        if (
            isinstance(self.num_directions, bool)
            or not isinstance(self.num_directions, int)
            or self.num_directions < 0
        ):
            raise ValueError(
                f"action.semantic_basis.num_directions must be an integer >= 0, got {self.num_directions!r}"
            )
        if self.num_directions == 0 and not self.age_direction:
            raise ValueError("action.semantic_basis is empty: give num_directions >= 1 or age_direction=true")


@dataclass(frozen=True, kw_only=True)
class ActionConfig:
    """How actions in [-1, 1] become latent displacements (values: ``conf/action/``)."""

    mode: str  # ACTION_MODES
    full_step_size: float  # full: Δz = full_step_size * a (per latent dimension)
    max_years_per_step: float  # local_linear: a[0] = ±1 asks for this many years
    max_step_norm: float  # local_linear: cap on ‖δ_age‖ where the age direction is flat
    num_corrections: int  # local_linear: K orthogonal correction directions
    correction_scale: float  # local_linear: latent units per unit correction action
    basis_seed: int  # the fixed random subspace the corrections live in
    keep: tuple[str, ...]  # local_linear: quantities the age step keeps to first order (KEEPABLE)
    residual: bool  # local_linear: a[0] corrects the walk's request clip(target − age)
    semantic_step_size: float  # semantic: Δz = semantic_step_size * Σ_k a_k b_k
    semantic_basis: SemanticBasisConfig  # semantic, levers: the basis b_k (the semantic walk's)
    max_stiffness: float  # levers: a[0] = 1 asks for this identity stiffness λ (a[0] = -1: 0)
    max_scale: float  # levers: a[2] = ±1 multiplies the request and the norm cap by max_scale^±1
    identity_sketch: int  # levers: random vector-Jacobian products sketching the identity Jacobian

    def __post_init__(self) -> None:
        if self.mode not in ACTION_MODES:
            raise ValueError(f"action.mode must be one of {ACTION_MODES}, got {self.mode!r}")
        object.__setattr__(self, "keep", tuple(self.keep))
        bad = [k for k in self.keep if k not in KEEPABLE]
        if bad or len(set(self.keep)) != len(self.keep):
            raise ValueError(
                f"action.keep must be distinct names from {list(KEEPABLE)}, got {list(self.keep)}"
            )
        if isinstance(self.semantic_basis, Mapping):
            object.__setattr__(self, "semantic_basis", SemanticBasisConfig(**self.semantic_basis))
        for name in (
            "full_step_size", "max_years_per_step", "max_step_norm", "semantic_step_size", "max_stiffness",
        ):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"action.{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.correction_scale) and self.correction_scale >= 0):
            raise ValueError(f"action.correction_scale must be >= 0, got {self.correction_scale!r}")
        if self.num_corrections < 0:
            raise ValueError(f"action.num_corrections must be >= 0, got {self.num_corrections}")
        if not (math.isfinite(self.max_scale) and self.max_scale >= 1):
            raise ValueError(f"action.max_scale must be a finite number >= 1, got {self.max_scale!r}")
        if (
            isinstance(self.identity_sketch, bool)
            or not isinstance(self.identity_sketch, int)
            or self.identity_sketch < 1
        ):
            raise ValueError(f"action.identity_sketch must be an integer >= 1, got {self.identity_sketch!r}")


@dataclass(frozen=True, kw_only=True)
class IdentityConfig:
    """Identity similarity to the start face: below ``soft_threshold`` the reward penalises, below
    ``hard_bound`` the episode fails. Units are the world's similarity (embedded world: 1 − dlib distance).
    Values: ``conf/identity/``."""

    soft_threshold: float
    hard_bound: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.hard_bound <= self.soft_threshold < 1.0):
            raise ValueError(
                "identity thresholds must satisfy 0 <= hard_bound <= soft_threshold < 1, got "
                f"hard_bound={self.hard_bound}, soft_threshold={self.soft_threshold}"
            )


@dataclass(frozen=True, kw_only=True)
class LatentAgeEnvConfig:
    """The MDP's settings: ``conf/env/`` plus the ``action``, ``identity`` and ``target`` groups. No defaults
    here: build it with :meth:`from_config` from a composed config (see :mod:`agelatent.config`)."""

    num_envs: int
    max_steps: int
    success_tolerance_years: float  # |age − target| ≤ this with identity kept ends an episode as a success
    typical_set: bool
    typical_set_tolerance: float
    offset_scale: float
    observe_latent: bool  # include z and z − z0 in the observation (else only their norms)
    observe_face: bool  # include P(male), its change and the identity embedding's offset from the start
    #: the step limit ends an episode as a terminal state (else a bootstrapped truncation)
    timeout_terminal: bool
    age_direction: AgeDirectionConfig
    action: ActionConfig
    identity: IdentityConfig
    target: TargetConfig

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LatentAgeEnvConfig:
        """From a composed train/eval config: its ``env`` group with the ``action``, ``identity`` and
        ``target`` groups as the nested sections."""
        groups = {key: to_dict(cfg[key]) for key in MDP_GROUPS}
        return from_mapping(cls, {**groups.pop("env"), **groups}, "env")

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"env.num_envs must be >= 1, got {self.num_envs}")
        if self.max_steps < 1:
            raise ValueError(f"env.max_steps must be >= 1, got {self.max_steps}")
        if not (math.isfinite(self.success_tolerance_years) and self.success_tolerance_years > 0):
            raise ValueError(
                f"env.success_tolerance_years must be > 0 years, got {self.success_tolerance_years}"
            )
        if not 0 < self.typical_set_tolerance < 1:
            raise ValueError(f"env.typical_set_tolerance must be in (0, 1), got {self.typical_set_tolerance}")
        t, a = self.target, self.action
        if a.mode == "levers" and self.age_direction.method != "autograd":
            raise ValueError(
                "action.mode=levers sketches the identity Jacobian by vector-Jacobian products: set "
                "env.age_direction.method=autograd (and a differentiable perception), or use action=semantic "
                "for a policy without gradients"
            )
        if a.mode in LOCAL_MODES and t.mode == "relative":
            most = a.max_years_per_step * (a.max_scale if a.mode == "levers" else 1.0)
            reach = self.max_steps * most + self.success_tolerance_years
            if t.max_delta > reach:
                raise ValueError(
                    f"unreachable targets: target.max_delta={t.max_delta} years but an episode can ask for at "
                    f"most max_steps * action.max_years_per_step{' * action.max_scale' if a.mode == 'levers' else ''}"
                    f" + success_tolerance_years = {reach:g} years; raise "
                    "env.max_steps or action.max_years_per_step, or lower target.max_delta"
                )


class LatentAgeEnv:
    """The MDP above over a :class:`~agelatent.world.World` (implements :class:`~agelatent.env.batched.BatchedEnv`)."""

    def __init__(self, world, cfg: LatentAgeEnvConfig, reward: Reward, *, auto_reset: bool = True) -> None:
        if not isinstance(cfg, LatentAgeEnvConfig):
            raise TypeError(
                f"cfg must be a LatentAgeEnvConfig (LatentAgeEnvConfig.from_config(composed_cfg)), got {type(cfg)}"
            )
        self.cfg = cfg
        self.world = world
        self.reward = reward
        self.auto_reset = auto_reset
        self.device = world.device
        self.num_envs = cfg.num_envs
        self.latent_dim = d = world.latent_dim
        self.mode = cfg.action.mode
        self.local_linear = self.mode in LOCAL_MODES  # ĝ and the kept quantities' gradients are tracked
        self.levers = self.mode == "levers"
        if self.local_linear and cfg.action.num_corrections >= d:
            raise ValueError(
                f"action.num_corrections must be < latent dim {d}, got {cfg.action.num_corrections}"
            )
        self.keep = cfg.action.keep if self.local_linear else ()
        if self.keep and cfg.age_direction.method != "autograd":
            raise ValueError(
                f"action.keep={list(self.keep)} needs the gradients of those quantities: set "
                "env.age_direction.method=autograd (and a differentiable perception), or keep nothing with "
                "action.keep=[]"
            )
        if (
            self.local_linear
            and cfg.age_direction.method == "autograd"
            and not world.perception.differentiable
        ):
            raise ValueError(
                "age_direction.method=autograd needs a differentiable perception (perception.runtime=torch); "
                "use age_direction.method=probes with perception.runtime=onnxruntime"
            )
        self.age_range = tuple(float(a) for a in world.perception.age_range)
        cfg.target.check_age_range(self.age_range)
        lo, hi = self.age_range
        self._age_centre, self._age_scale = (lo + hi) / 2, (hi - lo) / 4  # ages observed as ~[-2, 2]
        self.semantic = None  # [k, d] orthonormal rows: semantic's action basis, the levers' mixed-in basis
        if self.mode in ("semantic", "levers"):
            from agelatent.world.directions import semantic_basis

            sb = cfg.action.semantic_basis
            self.semantic = semantic_basis(
                world, sb.num_directions, sb.age_direction, sb.num_samples, sb.first_seed
            ).to(self.device)
        self.action_dim = {
            "full": d,
            "semantic": len(self.semantic) if self.semantic is not None else 0,
            "local_linear": 1 + cfg.action.num_corrections,
            "levers": 3,
        }[self.mode]
        self.identity_dim = int(world.perception.identity_dim)
        self.observation_dim = (
            (2 * d if cfg.observe_latent else 0)
            + 8
            + ((1 + len(self.keep)) if self.local_linear else 0)
            + (3 if self.levers else 0)
            + ((2 + self.identity_dim) if cfg.observe_face else 0)
        )
        basis = torch.randn(
            max(cfg.action.num_corrections, 1),
            d,
            generator=torch.Generator().manual_seed(cfg.action.basis_seed),
        )
        self._basis = torch.linalg.qr(basis.T).Q.T.contiguous().to(self.device)  # [K, d] orthonormal
        self._rng = torch.Generator().manual_seed(0)
        self.typical = world.typical_set()  # the clamp, the observation's ρ and the reward's latent_radius
        b = cfg.num_envs
        self.z = torch.zeros(b, d, device=self.device)
        self.z0 = torch.zeros_like(self.z)
        self.targets = torch.zeros(b, device=self.device)
        self.ages = torch.zeros(b, device=self.device)
        self.start_ages = torch.zeros(b, device=self.device)
        # the age network's clean reading (``ages`` is the robust one when the perception has one)
        self.clean_ages = torch.zeros(b, device=self.device)
        self.start_p_male = torch.zeros(b, device=self.device)
        self.identity0 = torch.zeros(b, self.identity_dim, device=self.device)
        self.identity = torch.zeros(b, self.identity_dim, device=self.device)
        self.similarity = torch.ones(b, device=self.device)
        self._grad = torch.zeros(b, d, device=self.device)
        self._keep_grads = torch.zeros(b, len(self.keep), d, device=self.device)  # [B, R, d]
        k = cfg.action.identity_sketch if self.levers else 0
        self._sketch = torch.zeros(b, k, d, device=self.device)  # [B, k, d]: U J_e, levers only
        self._sketch_rng = torch.Generator().manual_seed(cfg.action.basis_seed + 1)
        self.t = torch.zeros(b, dtype=torch.long, device=self.device)
        self.returns = torch.zeros(b, device=self.device)
        self.active = torch.ones(b, dtype=torch.bool, device=self.device)  # False: frozen (auto_reset off)
        self.outcome = torch.full((b,), int(Outcome.RUNNING), dtype=torch.long, device=self.device)
        self.p_male = torch.zeros(b, device=self.device)
        self.images: torch.Tensor | None = None
        self._world_calls = 0  # latents scored (the cost unit of an edit)
        self.row_calls = torch.zeros(b, device=self.device)  # the same, per row since its episode started
        self._stats = self._empty_stats()

    @classmethod
    def from_config(
        cls, world, cfg: Mapping[str, Any], *, auto_reset: bool = True, **fields: Any
    ) -> LatentAgeEnv:
        """The MDP and its reward as a composed train/eval config defines them (``env``, ``action``,
        ``identity``, ``target`` and ``reward`` groups), on ``world``; ``fields`` replace top-level env
        settings (e.g. ``num_envs``). The one way scripts, benchmarks and tests build a training env."""
        env_cfg = LatentAgeEnvConfig.from_config(cfg)
        if fields:
            env_cfg = dataclasses.replace(env_cfg, **fields)
        return cls(world, env_cfg, Reward.from_config(cfg["reward"]), auto_reset=auto_reset)

    @classmethod
    def for_edits(cls, world, cfg: LatentAgeEnvConfig, num_envs: int) -> LatentAgeEnv:
        """An env that moves editors: ``num_envs`` edits under ``cfg``'s rules, rows frozen when they finish
        (``auto_reset=False``), no reward (editors are judged by metrics)."""
        return cls(world, dataclasses.replace(cfg, num_envs=num_envs), Reward.zero(), auto_reset=False)

    # ---- scoring ----------------------------------------------------------------------------------------
    @property
    def world_calls(self) -> int:
        """Latents scored by the world so far, probes included: the cost unit of an edit."""
        return self._world_calls

    @property
    def age_gradient(self) -> torch.Tensor:
        """ĝ ``[B, d]``: the local age direction at the current latents (years per latent unit), kept up to
        date by every step in ``local_linear`` mode."""
        if not self.local_linear:
            raise RuntimeError("the age gradient is only tracked with action.mode=local_linear or levers")
        return self._grad

    def score(self, latents: torch.Tensor, *, with_grad: bool = False, rows: torch.Tensor | None = None):
        """Score latents through the world, counted in :attr:`world_calls` (for editors that look ahead,
        e.g. white-box gradient descent) and in :attr:`row_calls`: to the row each latent is for (``rows``,
        one index per latent), or shared out evenly over the rows when ``rows`` is None."""
        self._world_calls += len(latents)
        if rows is None:
            self.row_calls += len(latents) / self.num_envs
        else:
            self.row_calls.index_add_(0, rows.to(self.device), torch.ones(len(rows), device=self.device))
        return self.world.score(latents, with_grad=with_grad)

    def _score(
        self, latents: torch.Tensor, identity0: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ):
        """Score latents (those of ``rows``, whose :attr:`row_calls` they add to); with local-linear actions
        also return ĝ at them, with ``action.keep`` the kept quantities' gradients ``[B, R, d]`` (identity
        drift measured from ``identity0``; zero where it is None, i.e. at the start face, where the drift is
        at its minimum) and with levers the identity Jacobian's sketch ``[B, k, d]``: (scores, ĝ, kept,
        sketch), None for what the mode does not track."""
        probes = self.local_linear and self.cfg.age_direction.method == "probes"
        cost = 1 + (2 * min(self.cfg.age_direction.num_probes, self.latent_dim) if probes else 0)
        self._world_calls += len(latents) * cost
        if rows is not None:
            self.row_calls[rows] += cost
        if not self.local_linear:
            return self.world.score(latents), None, None, None
        if self.cfg.age_direction.method == "autograd":
            z = latents.detach().requires_grad_(True)
            scores = self.world.score(z, with_grad=True)
            drift = None if identity0 is None else (scores.identity - identity0).pow(2).sum()
            kept = {"gender": scores.p_male.sum(), "identity": drift}
            wanted = [scores.ages_years.sum(), *(kept[name] for name in self.keep)]
            k = self._sketch.shape[1]
            if k:  # the sketch S = U J_e: one vector-Jacobian product per random row of U, from the same pass
                u = torch.randn(k, *scores.identity.shape, generator=self._sketch_rng).to(scores.identity)
                wanted += [(u[i] * scores.identity).sum() for i in range(k)]
            last = max(i for i, q in enumerate(wanted) if q is not None)
            rows = [  # one backward pass per quantity; a quantity at its minimum (drift at z0) has none
                torch.zeros_like(z) if q is None else torch.autograd.grad(q, z, retain_graph=i < last)[0]
                for i, q in enumerate(wanted)
            ]
            r = len(self.keep)
            keep = torch.stack(rows[1 : 1 + r], 1) if r else z.new_zeros(len(z), 0, z.shape[1])
            sketch = torch.stack(rows[1 + r :], 1) if k else None
            check_finite(
                {
                    "age gradients": rows[0],
                    **{f"{n} gradients": g for n, g in zip(self.keep, rows[1 : 1 + r], strict=True)},
                    **({"identity sketch": sketch} if k else {}),
                },
                "autograd through the world (the local-linear step's directions)",
            )
            return _detach_scores(scores), rows[0], keep.detach(), None if sketch is None else sketch.detach()
        scores = self.world.score(latents)
        grad, _ = local_age_gradient(self.world, latents, self.cfg.age_direction, self._rng)
        return scores, grad, None, None

    def start_episodes(self, rows: torch.Tensor, latents: torch.Tensor, targets: torch.Tensor | None) -> None:
        """(Re)start episodes ``rows`` from ``latents``, towards ``targets`` (None: drawn from ``cfg.target``)."""
        self.row_calls[rows] = 0.0
        scores, grad, keep, sketch = self._score(latents, rows=rows)
        self.z[rows] = latents
        self.z0[rows] = latents
        self.ages[rows] = scores.ages_years
        self.start_ages[rows] = scores.ages_years
        self.clean_ages[rows] = scores.clean_ages
        self.p_male[rows] = scores.p_male
        self.start_p_male[rows] = scores.p_male
        self.identity0[rows] = scores.identity
        self.identity[rows] = scores.identity
        self.similarity[rows] = 1.0
        if grad is not None:
            self._grad[rows] = grad
        if keep is not None:
            self._keep_grads[rows] = keep
        if sketch is not None:
            self._sketch[rows] = sketch
        if targets is None:
            targets = self.cfg.target.sample(scores.ages_years.cpu(), self._rng).to(self.device)
        self.targets[rows] = targets
        self.t[rows] = 0
        self.returns[rows] = 0.0
        self.outcome[rows] = Outcome.RUNNING
        self.active[rows] = True
        if self.images is None or self.images.shape[1:] != scores.images.shape[1:]:
            self.images = torch.zeros(self.num_envs, *scores.images.shape[1:], device=self.device)
        self.images[rows] = scores.images

    def sample_starts(self, n: int) -> torch.Tensor:
        """``n`` training start faces: seeds from the env's own stream, latents from the generator's prior."""
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=self._rng).tolist()
        return self.world.sample_latents(seeds)

    # ---- protocol -------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Fresh episodes: start latents from the prior and targets from ``cfg.target`` (training stream)."""
        if seed is not None:
            self._rng.manual_seed(seed)
        rows = torch.arange(self.num_envs, device=self.device)
        self.start_episodes(rows, self.sample_starts(self.num_envs), None)
        return self.observation()

    def reset_to(self, start_latents: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Episodes from given faces ``[B, d]`` towards given target ages ``[B]`` (B must be ``num_envs``)."""
        if tuple(start_latents.shape) != (self.num_envs, self.latent_dim):
            raise ValueError(
                f"start_latents must be [num_envs, latent_dim] = {(self.num_envs, self.latent_dim)}, "
                f"got {tuple(start_latents.shape)}"
            )
        targets = torch.as_tensor(targets, dtype=torch.float32, device=self.device).reshape(-1)
        if targets.shape != (self.num_envs,):
            raise ValueError(f"targets must be [num_envs] = [{self.num_envs}], got {tuple(targets.shape)}")
        lo, hi = self.age_range
        if not ((targets >= lo) & (targets <= hi)).all():
            raise ValueError(
                f"target ages must lie in the age model's range [{lo:g}, {hi:g}], got {targets.tolist()}"
            )
        rows = torch.arange(self.num_envs, device=self.device)
        self.start_episodes(rows, start_latents.to(self.device, torch.float32), targets)
        return self.observation()

    def observation(self) -> torch.Tensor:
        cfg = self.cfg
        bound = cfg.identity.hard_bound
        offset = self.z - self.z0
        parts = [self.z, offset * cfg.offset_scale] if cfg.observe_latent else []
        parts += [
            offset.norm(dim=1, keepdim=True),
            (self.typical.relative_radii(self.z).mean(1, keepdim=True) - 1.0) * 10.0,
            ((self.targets - self._age_centre) / self._age_scale)[:, None],
            ((self.ages - self._age_centre) / self._age_scale)[:, None],
            ((self.targets - self.ages) / self._age_scale)[:, None],
            self.similarity[:, None],
            ((self.similarity - bound) / (1.0 - bound))[:, None],
            (self.t.float() / cfg.max_steps)[:, None],
        ]
        if self.local_linear:
            parts.append(torch.log10(self._grad.norm(dim=1, keepdim=True).clamp_min(1e-3)))
            if self.keep:
                parts.append(torch.log10(self._keep_grads.norm(dim=2).clamp_min(1e-3)))
        if self.levers:
            parts.append(self.lever_forecast())
        if cfg.observe_face:
            parts += [
                self.p_male[:, None],
                (self.p_male - self.start_p_male)[:, None],
                (self.identity - self.identity0) * cfg.offset_scale,
            ]
        return torch.cat(parts, dim=1).float()

    def age_step(self, delta_years: torch.Tensor) -> torch.Tensor:
        """The minimum-norm latent step ``[B, d]`` for ``delta_years [B]`` along the local age direction,
        keeping ``action.keep`` to first order, norm-capped at ``action.max_step_norm`` (``local_linear``
        mode; the walk baseline and the policy's ``a[0]`` both use it)."""
        if not self.local_linear:
            raise RuntimeError("age_step needs action.mode=local_linear (it follows the local age direction)")
        return constrained_min_norm_step(
            self._grad, self._keep_grads, delta_years.to(self.device), self.cfg.action.max_step_norm
        )

    # ---- the levers (action.mode=levers) -------------------------------------------------------------------
    def levers_of(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions ``[B, 3]`` in [-1, 1] -> (stiffness λ, mix β, scale s), each ``[B]`` (module docstring)."""
        a = self.cfg.action
        actions = actions.to(self.device, torch.float32).clamp(-1.0, 1.0)
        stiffness = (1.0 + a.max_stiffness) ** ((actions[:, 0] + 1.0) / 2.0) - 1.0
        return stiffness, (actions[:, 1] + 1.0) / 2.0, a.max_scale ** actions[:, 2]

    def actions_of(self, stiffness: float, mix: float, scale: float) -> torch.Tensor:
        """The action ``[B, 3]`` (every row alike) that sets the levers to these values: the inverse of
        :meth:`levers_of`, e.g. for a fixed-lever walk."""
        a = self.cfg.action
        if not (
            0 <= stiffness <= a.max_stiffness and 0 <= mix <= 1 and 1 / a.max_scale <= scale <= a.max_scale
        ):
            raise ValueError(
                f"levers out of range: stiffness {stiffness} in [0, {a.max_stiffness}], mix {mix} in [0, 1], "
                f"scale {scale} in [1/{a.max_scale}, {a.max_scale}] (action.max_stiffness, action.max_scale)"
            )
        row = [
            2.0 * math.log1p(stiffness) / math.log1p(a.max_stiffness) - 1.0,
            2.0 * mix - 1.0,
            math.log(scale) / math.log(a.max_scale) if a.max_scale > 1 else 0.0,
        ]
        return torch.tensor(row, device=self.device).expand(self.num_envs, 3).clone()

    def semantic_age_gradient(self) -> torch.Tensor:
        """ĝ's projection on the semantic basis ``[B, d]``: the age direction the semantic step can follow."""
        return (self._grad @ self.semantic.T) @ self.semantic

    def lever_step(self, stiffness: torch.Tensor, mix: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The step ``[B, d]`` the levers ask for (module docstring): ``s · (target − age)`` years, clipped to
        ``±s · max_years_per_step``, by ``(1 − β)`` x the stiff step + ``β`` x the semantic step, the sum
        norm-capped at ``s · max_step_norm``."""
        a = self.cfg.action
        most = scale * a.max_years_per_step
        years = torch.maximum(torch.minimum(scale * (self.targets - self.ages), most), -most)
        stiff = stiff_min_norm_step(self._grad, self._keep_grads, years, self._sketch, stiffness)
        semantic = min_norm_step(self.semantic_age_gradient(), years)
        return cap_norm((1.0 - mix)[:, None] * stiff + mix[:, None] * semantic, scale * a.max_step_norm)

    def lever_forecast(self) -> torch.Tensor:
        """What the levers will do, ``[B, 3]`` (log10): the years per latent unit within the semantic basis,
        and the identity embedding's predicted movement per year of the plain step and of the semantic one
        (‖S δ₁‖ / √k for the one-year minimum-norm step δ₁ = g/‖g‖², g = ĝ or its semantic projection)."""
        k = self._sketch.shape[1]
        semantic = self.semantic_age_gradient()

        def per_year(g: torch.Tensor) -> torch.Tensor:  # ‖S δ₁‖ / √k with δ₁ = g / ‖g‖²
            moved = (self._sketch @ g[..., None]).squeeze(-1).norm(dim=1)
            return moved / (math.sqrt(k) * g.pow(2).sum(1).clamp_min(1e-12))

        forecast = torch.stack([semantic.norm(dim=1), per_year(self._grad), per_year(semantic)], dim=1)
        return torch.log10(forecast.clamp_min(1e-3))

    def displacement(self, actions: torch.Tensor) -> torch.Tensor:
        """Map actions in [-1, 1] to latent displacements Δz ``[B, d]`` (see the module docstring)."""
        a = self.cfg.action
        actions = actions.to(self.device, torch.float32).clamp(-1.0, 1.0)
        if self.mode == "semantic":
            return a.semantic_step_size * actions @ self.semantic
        if self.mode == "full":
            return a.full_step_size * actions
        if self.levers:
            return self.lever_step(*self.levers_of(actions))
        years = actions[:, 0] * a.max_years_per_step
        if a.residual:  # a = 0 is the walk's step; a[0] moves its request by up to ±max_years_per_step
            years = (self.targets - self.ages + years).clamp(-a.max_years_per_step, a.max_years_per_step)
        delta = self.age_step(years)
        if a.num_corrections:
            if self.keep:
                rows = torch.cat([self._grad[:, None], self._keep_grads], 1)  # J [B, 1 + R, d]
                basis = null_space_basis(rows, self._basis)  # [B, K, d]
            else:
                basis = orthogonal_basis(self._grad, self._basis)
            delta = delta + a.correction_scale * torch.einsum("bk,bkd->bd", actions[:, 1:], basis)
        return delta

    def actions_for(self, delta: torch.Tensor) -> torch.Tensor:
        """The actions ``[B, action_dim]`` whose displacement is closest to ``delta [B, d]`` (least squares),
        before clipping into [-1, 1]: ``full`` and ``semantic`` modes (how a teacher's steps become
        demonstrations, :mod:`agelatent.agent.imitation`)."""
        delta = delta.to(self.device, torch.float32)
        if self.mode == "semantic":
            return delta @ self.semantic.T / self.cfg.action.semantic_step_size
        if self.mode == "full":
            return delta / self.cfg.action.full_step_size
        raise RuntimeError(
            f"action.mode={self.mode} actions are not a linear map of Δz; use full or semantic"
        )

    def step(self, actions: torch.Tensor) -> StepResult:
        if tuple(actions.shape) != (self.num_envs, self.action_dim):
            raise ValueError(
                f"actions must be [num_envs, action_dim] = {(self.num_envs, self.action_dim)}, "
                f"got {tuple(actions.shape)}"
            )
        return self.step_latent(self.displacement(actions))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Radially clamp into the typical set (when enabled)."""
        if not self.cfg.typical_set:
            return z
        return self.typical.clamp(z, self.cfg.typical_set_tolerance)

    def step_latent(self, delta: torch.Tensor) -> StepResult:
        """Advance every active row by the latent displacement ``delta [B, d]``."""
        cfg = self.cfg
        active = self.active.clone()
        z_new = torch.where(active[:, None], self.project(self.z + delta.to(self.device)), self.z)
        step_norm = torch.where(active, (z_new - self.z).norm(dim=1), torch.zeros_like(self.ages))
        rows = active.nonzero().flatten()
        if len(rows) == 0:  # every row is frozen (auto_reset=False): nothing moves, nothing is scored
            obs = self.observation()
            none = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return StepResult(
                obs, obs, torch.zeros_like(self.ages), none, none, self.returns.clone(), self.t.clone()
            )
        scores, grad, keep, sketch = self._score(z_new[rows], self.identity0[rows], rows)
        ages_before = self.ages.clone()
        self.z[rows] = z_new[rows]
        self.ages[rows] = scores.ages_years
        self.clean_ages[rows] = scores.clean_ages
        self.p_male[rows] = scores.p_male
        self.similarity[rows] = self.world.identity_similarity(scores.identity, self.identity0[rows])
        self.identity[rows] = scores.identity
        self.images[rows] = scores.images
        if grad is not None:
            self._grad[rows] = grad
        if keep is not None:
            self._keep_grads[rows] = keep
        if sketch is not None:
            self._sketch[rows] = sketch
        self.t[rows] += 1

        identity_lost = active & (self.similarity < cfg.identity.hard_bound)
        tolerance = cfg.success_tolerance_years  # success needs the robust and the clean reading to agree
        reached = ((self.ages - self.targets).abs() <= tolerance) & (
            (self.clean_ages - self.targets).abs() <= tolerance
        )
        success = active & ~identity_lost & reached
        terminated = success | identity_lost
        timeout = active & ~terminated & (self.t >= cfg.max_steps)
        if cfg.timeout_terminal:  # the step limit is part of the task: a terminal state, not bootstrapped
            terminated, truncated = terminated | timeout, torch.zeros_like(timeout)
        else:  # a truncation: the learner bootstraps from the last state
            truncated = timeout
        transition = Transition(
            ages_before=ages_before,
            ages_after=self.ages,
            targets=self.targets,
            similarity=self.similarity,
            p_male=self.p_male,
            start_p_male=self.start_p_male,
            latents_after=self.z,
            latent_radius=self.typical.relative_radii(self.z),
            step_norm=step_norm,
            success=success,
            identity_lost=identity_lost,
        )
        reward, parts = self.reward(transition)
        reward = torch.where(active, reward, torch.zeros_like(reward))
        self.returns += reward
        done = terminated | truncated
        self.outcome[success] = Outcome.SUCCESS
        self.outcome[identity_lost] = Outcome.IDENTITY_LOST
        self.outcome[timeout] = Outcome.TIMEOUT

        info = {
            "age": self.ages.clone(),
            "age_error": (self.ages - self.targets).abs(),
            "similarity": self.similarity.clone(),
            "step_norm": step_norm,
            **{f"reward_{k}": v for k, v in parts.items()},
        }
        final_obs = self.observation()
        episode_return = self.returns.clone()
        episode_length = self.t.clone()
        self.record_finished(done)
        if self.auto_reset and bool(done.any()):
            finished = done.nonzero().flatten()
            self.start_episodes(finished, self.sample_starts(len(finished)), None)
            obs = self.observation()
        else:
            self.active &= ~done
            obs = final_obs
        return StepResult(
            obs=obs,
            final_obs=final_obs,
            reward=reward.float(),
            terminated=terminated,
            truncated=truncated,
            episode_return=episode_return.float(),
            episode_length=episode_length,
            info=info,
        )

    # ---- checkpointing --------------------------------------------------------------------------------
    #: the per-row tensors of the episodes in progress (with ``images``, the RNG and the counters: the state)
    _EPISODE_STATE = (
        "z", "z0", "targets", "ages", "start_ages", "clean_ages", "p_male", "start_p_male", "identity0", "identity",
        "similarity", "_grad", "_keep_grads", "_sketch", "t", "returns", "active", "outcome",
    )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The episodes in progress, the start-face/target RNG and the statistics counters: with it in a
        checkpoint a resumed run's episodes continue where they were instead of starting afresh (plain
        tensors and numbers: loads with ``torch.load(weights_only=True)``)."""
        state: dict[str, Any] = {
            name: getattr(self, name).detach().cpu().clone() for name in self._EPISODE_STATE
        }
        state["images"] = None if self.images is None else self.images.detach().cpu().clone()
        state["rng"] = self._rng.get_state()
        state["sketch_rng"] = self._sketch_rng.get_state()
        state["world_calls"] = self._world_calls
        state["stats"] = dict(self._stats)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s episodes; refuses, naming the tensor, one from another MDP shape
        (``env.num_envs``, the latent or identity size, the number of kept quantities). A checkpoint from
        before ``clean_ages`` existed had no robust reading, so its clean ages are its ages."""
        state = {"clean_ages": state["ages"], "_sketch": self._sketch, **state}  # older: no sketch either
        for name in self._EPISODE_STATE:
            mine, theirs = getattr(self, name), state[name]
            if tuple(theirs.shape) != tuple(mine.shape) or theirs.dtype != mine.dtype:
                raise ValueError(
                    f"the checkpoint's env state {name} is {tuple(theirs.shape)} {theirs.dtype}, this env's is "
                    f"{tuple(mine.shape)} {mine.dtype}: resume with the run's own env settings (env.num_envs, "
                    "action.keep, generator, perception) or start a new run_name"
                )
        for name in self._EPISODE_STATE:
            getattr(self, name).copy_(state[name].to(self.device))
        self.images = None if state["images"] is None else state["images"].to(self.device)
        self._rng.set_state(state["rng"])
        if "sketch_rng" in state:
            self._sketch_rng.set_state(state["sketch_rng"])
        self._world_calls = int(state["world_calls"])
        self._stats = {k: float(v) for k, v in state["stats"].items()}

    # ---- episode statistics ------------------------------------------------------------------------------
    @staticmethod
    def _empty_stats() -> dict[str, float]:
        return dict.fromkeys(
            ("episodes", "success", "identity_lost", "age_error", "similarity", "length"), 0.0
        )

    def record_finished(self, done: torch.Tensor) -> None:
        """Add the episodes ``done`` ends to the statistics :meth:`episode_metrics` reports."""
        if not bool(done.any()):
            return
        s = self._stats
        s["episodes"] += float(done.sum())
        s["success"] += float((self.outcome[done] == Outcome.SUCCESS).sum())
        s["identity_lost"] += float((self.outcome[done] == Outcome.IDENTITY_LOST).sum())
        s["age_error"] += float((self.ages[done] - self.targets[done]).abs().sum())
        s["similarity"] += float(self.similarity[done].sum())
        s["length"] += float(self.t[done].sum())

    def episode_metrics(self, reset: bool = True) -> dict[str, float]:
        """Means over the episodes finished since the last call: success rate, identity-loss rate, final
        age error, final similarity, length (empty when none finished)."""
        s = self._stats
        n = s["episodes"]
        out = {} if n == 0 else {k: v / n for k, v in s.items() if k != "episodes"} | {"episodes": n}
        if reset:
            self._stats = self._empty_stats()
        return out


def _detach_scores(scores):
    return type(scores)(**{k: None if v is None else v.detach() for k, v in scores.__dict__.items()})
