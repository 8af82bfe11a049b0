"""Does the trained policy beat the baselines? Issue #3's acceptance measurement.

    python experiments/compare_editors.py --policy runs/<name> [--faces 64] [--targets 20 30 40 50 60]

Runs the evaluation protocol (``agelatent.evaluation.protocol``) on held-out faces (seeds 1,000,000 onwards;
training draws its start faces from its own RNG stream) x target ages, with the policy's own MDP (identity
bound, step limit, action space) for every editor, and writes ``results/compare/<run name>/results.md``/``.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from agelatent.evaluation.protocol import EDITORS, evaluate
from agelatent.jobs import compose_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", type=Path, required=True, help="training run directory (or checkpoint)")
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--first-seed", type=int, default=1_000_000)
    parser.add_argument("--targets", type=float, nargs="+", default=[20, 30, 40, 50, 60])
    parser.add_argument("--editors", nargs="+", default=list(EDITORS), choices=EDITORS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = args.policy.name if args.policy.is_dir() else args.policy.parent.parent.name
    out = args.out or Path("results") / "compare" / name
    cfg = compose_config(
        "eval",
        [
            "device=cpu",
            f"policy={args.policy}",
            f"faces.num={args.faces}",
            f"faces.first_seed={args.first_seed}",
            f"targets=[{','.join(f'{t:g}' for t in args.targets)}]",
            f"editors=[{','.join(args.editors)}]",
            f"out_dir={out}",
            f"title=Policy {name} vs baselines",
        ],
    )
    evaluate(cfg, out)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
