"""The gate before a policy is trained: how much could a per-edit choice of the step's levers gain over the
best single setting of them?

A policy can only beat the walk by choosing, edit by edit and step by step, a better step than one fixed
rule. This measures the ceiling of the per-edit part of that: a family of walks with three levers the walk
does not have, each setting run on the same validation edits, then

* **best single**: the success of the best setting (what tuning gets);
* **oracle**: the fraction of edits that *some* setting brings to success (what a perfect per-edit choice
  gets, before any per-step choice); its gap to best single is the headroom.

The levers are the policy's ``action=levers`` (:meth:`~agelatent.env.latent_age.LatentAgeEnv.lever_step`): one
step family, measured here at fixed settings (:class:`~agelatent.editors.LeverWalk`, its other settings
``editor_settings.lever_walk``'s) and chosen per step by the policy:

* ``stiffness`` λ: the step solves min ‖δ‖² + λ‖J_e δ‖² subject to the age change (and P(male) kept to
  first order), with J_e the identity embedding's Jacobian sketched by ``action.identity_sketch`` random
  vector-Jacobian products -- identity drift priced from the first step, where the walk's drift constraint is
  empty;
* ``mix`` β: (1 - β) x that step + β x the same request solved within the semantic basis (SeFa directions and
  the ridge age direction, as ``semantic_walk``);
* ``scale`` s: the request and the norm cap multiplied by s (a log-scale step size).

Success is the robust judge's (``experiment=real_edits`` by default: the blurred reading and the clean one
both within the window). Test faces are never read here.

    python experiments/step_gate.py [--out results/step_gate] [overrides of agelatent-eval ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from agelatent.config import compose_config
from agelatent.editors.base import build_editor, run_edits
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.evaluation.comparison import editor_mdp, validate
from agelatent.evaluation.held_out import held_out_edits
from agelatent.evaluation.metrics import edit_metrics
from agelatent.world import build_world

STIFFNESS = (0.0, 1.0, 10.0)
MIX = (0.0, 0.5, 1.0)
SCALE = (0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/step_gate"))
    parser.add_argument(
        "overrides", nargs="*", help="agelatent-eval overrides (default: experiment=real_edits)"
    )
    args = parser.parse_args()
    cfg = compose_config(
        "eval",
        ["protocol=validation", "experiment=real_edits", "logger=none", "evaluator=none",
         "editors=[lever_walk]", *args.overrides],
    )  # fmt: skip
    env_cfg, editors = validate(cfg)
    world = build_world(cfg)
    starts, targets, _ = held_out_edits(world, cfg.protocol)
    settings = cfg.editor_settings.lever_walk
    rows, success = [], {}
    for stiffness, mix, scale in itertools.product(STIFFNESS, MIX, SCALE):
        if mix == 1 and stiffness > 0:
            continue  # the semantic step has no stiffness
        editor = build_editor("lever_walk", {**settings, "stiffness": stiffness, "mix": mix, "scale": scale})
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
