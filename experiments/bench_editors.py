"""Benchmark: what one *successful* edit costs each editor, in world calls and seconds.

    python experiments/bench_editors.py [--faces 8] [--policy runs/<name>] [--editors NAME ...] [--threads 2]
        [--json PATH]

Runs ``agelatent-eval``'s protocol (:func:`agelatent.evaluation.comparison.evaluate`: the same editors,
settings and MDP rules) on ``--faces`` *validation* faces x the protocol's targets (never the test faces),
without independent evaluators, and divides each editor's world calls and seconds by its successful edits.
The learned policy is included when ``--policy`` names a training run. A world call is one latent scored
(a forward pass of generator + face networks); an editor that fails every edit has no cost per success
(reported as null).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from agelatent.config import compose_config
from agelatent.evaluation.comparison import evaluate


def run(faces: int, policy: Path | None, editors: list[str] | None = None) -> list[dict]:
    overrides = [
        "device=cpu",
        "protocol=validation",
        f"protocol.num_faces={faces}",
        f"protocol.grid_faces={min(faces, 6)}",
        "evaluator=none",
        "logger=none",
    ]
    cfg = compose_config("eval", overrides + ([f"policy={policy}"] if policy else []))
    if editors:
        cfg.editors = editors
    elif policy is None:
        cfg.editors = [e for e in cfg.editors if e != "sac_policy"]
    with tempfile.TemporaryDirectory() as out:
        rows = evaluate(cfg, Path(out))
    table = []
    for r in rows:
        # per edit x edits / successes; none without a success
        share = r["success_rate"]
        table.append(
            {
                "editor": r["editor"],
                "edits": int(r["edits"]),
                "success_rate": r["success_rate"],
                "world_calls_per_edit": r["world_calls_per_edit"],
                "seconds_per_edit": r["seconds_per_edit"],
                "world_calls_per_success": r["world_calls_per_edit"] / share if share else None,
                "seconds_per_success": r["seconds_per_edit"] / share if share else None,
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=int, default=8, help="validation faces (x the protocol's targets)")
    parser.add_argument("--policy", type=Path, default=None, help="a training run directory (runs/<name>)")
    parser.add_argument("--editors", nargs="+", default=None, help="default: eval.yaml's editors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = run(args.faces, args.policy, args.editors)
    for r in table:
        calls, secs = r["world_calls_per_success"], r["seconds_per_success"]
        cost = f"{calls:.0f} world calls, {secs:.2f} s" if calls is not None else "no successful edit"
        print(f"{r['editor']:>18}: success {r['success_rate']:.2f} of {r['edits']} edits; per success {cost}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"threads": args.threads, "faces": args.faces, "editors": table}, indent=2)
        )


if __name__ == "__main__":
    main()
