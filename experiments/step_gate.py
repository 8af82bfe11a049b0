"""The gate before a policy is trained: how much could a per-edit choice of the step's levers gain over the
best single setting of them?

A policy can only beat the walk by choosing, edit by edit and step by step, a better step than one fixed
rule. This measures the ceiling of the per-edit part of that: a family of walks with three levers the walk
does not have, each setting run on the same validation edits, then

* **best single**: the success of the best setting (what tuning gets);
* **oracle**: the fraction of edits that *some* setting brings to success (what a perfect per-edit choice
  gets, before any per-step choice); its gap to best single is the headroom.

The levers (:class:`LeverWalk`):

* ``stiffness`` λ: the step solves min ‖δ‖² + λ‖J_e δ‖² subject to the age change (and P(male) kept to
  first order), with J_e the identity embedding's Jacobian sketched by ``sketch`` random vector-Jacobian
  products -- identity drift priced from the first step, where the walk's drift constraint is empty;
* ``mix`` β: (1 - β) x that step + β x the same request solved within the semantic basis (SeFa directions and
  the ridge age direction, as ``semantic_walk``);
* ``scale`` s: the request and the norm cap multiplied by s (a log-scale step size).

Success is the robust judge's (``experiment=real_edits`` by default: the blurred reading and the clean one
both within the window). Test faces are never read here.

    python experiments/step_gate.py [--out results/step_gate] [overrides of agelatent-eval ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import torch

from agelatent.config import compose_config
from agelatent.editors.base import Editor, run_edits
from agelatent.editors.baselines import SemanticWalk
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.env.local_linear import min_norm_step
from agelatent.evaluation.comparison import editor_mdp, validate
from agelatent.evaluation.held_out import held_out_edits
from agelatent.evaluation.metrics import edit_metrics
from agelatent.world import build_world

STIFFNESS = (0.0, 1.0, 10.0)
MIX = (0.0, 0.5, 1.0)
SCALE = (0.5, 1.0, 2.0)


def stiff_step(rows: torch.Tensor, rhs: torch.Tensor, sketch: torch.Tensor, stiffness: float) -> torch.Tensor:
    """argmin ‖δ‖² + (stiffness / k) ‖S δ‖² subject to ``rows`` δ = ``rhs``: ``rows [B, R, d]``, ``rhs [B, R]``,
    ``sketch`` S ``[B, k, d]`` (its rows are random combinations of J_e's rows, so that E‖S δ‖² / k = ‖J_e δ‖²
    up to the embedding's scale). δ = M⁻¹Aᵀ(A M⁻¹ Aᵀ)⁻¹ b with M = I + (λ/k) SᵀS, M⁻¹ applied by Woodbury."""
    k = sketch.shape[1]

    def m_inv(x: torch.Tensor) -> torch.Tensor:  # x [B, d, n] -> M⁻¹ x
        if stiffness == 0:
            return x
        small = torch.eye(k, dtype=x.dtype) * (k / stiffness) + sketch @ sketch.transpose(1, 2)
        return x - sketch.transpose(1, 2) @ torch.linalg.solve(small, sketch @ x)

    mi_at = m_inv(rows.transpose(1, 2))  # [B, d, R]
    gram = rows @ mi_at + 1e-9 * torch.eye(rows.shape[1], dtype=rows.dtype)
    return (mi_at @ torch.linalg.solve(gram, rhs[..., None])).squeeze(-1)


class LeverWalk(Editor):
    """The walk with three levers (module docstring); rows of the env that have finished are left alone."""

    name = "lever_walk"

    def __init__(self, *, stiffness, mix, scale, sketch, max_years_per_step, max_step_norm, semantic, seed):
        self.stiffness, self.mix, self.scale, self.sketch = stiffness, mix, scale, sketch
        self.max_years_per_step, self.max_step_norm = max_years_per_step, max_step_norm
        self.semantic, self.seed = semantic, seed

    def env_action(self, action):
        return dataclasses.replace(
            action, mode="local_linear", max_step_norm=self.max_step_norm, keep=("gender",)
        )

    def prepare(self, env: LatentAgeEnv) -> None:
        self.semantic.prepare(env)
        self._rng = torch.Generator().manual_seed(self.seed)

    def _sketch(self, env: LatentAgeEnv) -> torch.Tensor:
        z = env.z.detach().requires_grad_(True)
        identity = env.score(z, with_grad=True).identity
        u = torch.randn(self.sketch, *identity.shape, generator=self._rng).to(identity)
        rows = [
            torch.autograd.grad((u[i] * identity).sum(), z, retain_graph=i < self.sketch - 1)[0]
            for i in range(self.sketch)
        ]
        return torch.stack(rows, 1).detach()  # [B, k, d]

    def propose(self, env: LatentAgeEnv) -> torch.Tensor:
        years = (self.scale * (env.targets - env.ages)).clamp(
            -self.scale * self.max_years_per_step, self.scale * self.max_years_per_step
        )
        cap = self.scale * self.max_step_norm
        step = torch.zeros_like(env.z)
        if self.mix < 1:
            rows = torch.cat([env.age_gradient[:, None], env._keep_grads], 1)  # age, P(male)
            rhs = torch.zeros(rows.shape[:2], dtype=rows.dtype)
            rhs[:, 0] = years
            sketch = self._sketch(env) if self.stiffness > 0 else rows.new_zeros(len(rows), 1, rows.shape[2])
            step = (1 - self.mix) * stiff_step(rows, rhs, sketch, self.stiffness)
        if self.mix > 0:
            basis = self.semantic.basis
            within = (env.age_gradient @ basis.T) @ basis
            step = step + self.mix * min_norm_step(within, years)
        return step * (cap / step.norm(dim=1, keepdim=True).clamp_min(cap))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/step_gate"))
    parser.add_argument("--sketch", type=int, default=4, help="random vector-Jacobian products for J_e")
    parser.add_argument(
        "overrides", nargs="*", help="agelatent-eval overrides (default: experiment=real_edits)"
    )
    args = parser.parse_args()
    cfg = compose_config(
        "eval",
        ["protocol=validation", "experiment=real_edits", "logger=none", "evaluator=none",
         "editors=[local_linear_walk,semantic_walk]", *args.overrides],
    )  # fmt: skip
    env_cfg, editors = validate(cfg)
    world = build_world(cfg)
    starts, targets, _ = held_out_edits(world, cfg.protocol)
    walk = editors["local_linear_walk"]
    semantic: SemanticWalk = editors["semantic_walk"]
    rows, success = [], {}
    for stiffness, mix, scale in itertools.product(STIFFNESS, MIX, SCALE):
        if mix == 1 and stiffness > 0:
            continue  # the semantic step has no stiffness
        editor = LeverWalk(
            stiffness=stiffness, mix=mix, scale=scale, sketch=args.sketch, max_years_per_step=walk.max_years_per_step,
            max_step_norm=walk.max_step_norm, semantic=semantic, seed=0,
        )  # fmt: skip
        env = LatentAgeEnv.for_edits(world, editor_mdp(editor, env_cfg), len(starts))
        result = run_edits(env, editor, starts, targets)
        m = edit_metrics(result, env_cfg.identity.hard_bound, cfg.protocol.success_window_years)
        ok = m.get("robust_success_rate", m["success_rate"])
        success[(stiffness, mix, scale)] = ok
        rows.append({
            "stiffness": stiffness, "mix": mix, "scale": scale, "success": float(ok.mean()),
            "gender_flips": float(m["gender_flip_rate"].mean()), "similarity": float(m["similarity"].mean()),
            "world_calls_per_edit": result.world_calls / len(starts),
        })  # fmt: skip
        print(rows[-1], flush=True)
    table = torch.stack(list(success.values()))  # [settings, edits]
    best = max(rows, key=lambda r: r["success"])
    key = (best["stiffness"], best["mix"], best["scale"])
    out = {"edits": int(table.shape[1]), "best_single": best, "oracle": float(table.max(0).values.mean())}
    for i, name in enumerate(("stiffness", "mix", "scale")):  # one lever free, the others at the best setting
        free = [v for k, v in success.items() if all(k[j] == key[j] for j in range(3) if j != i)]
        out[f"oracle_{name}_only"] = float(torch.stack(free).max(0).values.mean())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_gate.json").write_text(json.dumps({"settings": rows, **out}, indent=2))
    lines = [
        f"# The gate: per-edit choice of the step's levers ({out['edits']} validation edits, robust judge)",
        "",
        "| stiffness | mix | scale | success | gender flips | identity sim. | world calls / edit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['stiffness']:g} | {r['mix']:g} | {r['scale']:g} | {r['success']:.2f} | {r['gender_flips']:.2f} | "
            f"{r['similarity']:.2f} | {r['world_calls_per_edit']:.1f} |"
            for r in sorted(rows, key=lambda r: -r["success"])
        ),
        "",
        f"Best single setting: stiffness {best['stiffness']:g}, mix {best['mix']:g}, scale {best['scale']:g}: "
        f"success {best['success']:.2f}. Oracle (some setting succeeds): {out['oracle']:.2f}; headroom "
        f"{out['oracle'] - best['success']:.2f}. One lever free, the others at the best setting: "
        + ", ".join(f"{n} {out[f'oracle_{n}_only']:.2f}" for n in ("stiffness", "mix", "scale")),
    ]
    (args.out / "step_gate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
