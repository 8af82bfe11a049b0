"""Learning curves of a training run on the *validation* faces (:mod:`agelatent.evaluation.curves`).

python experiments/learning_curves.py --run runs/<name> [--out results/curves/<name>] [EVAL OVERRIDES ...]
make curves RUN=runs/<name>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agelatent.config import compose_config
from agelatent.evaluation.curves import curves
from agelatent.runs import RunDir, run_job


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a training run directory")
    parser.add_argument("--out", type=Path, default=None, help="default: results/curves/<run name>")
    parser.add_argument("--every", type=int, default=1, help="every k-th snapshot, back from the final one")
    parser.add_argument("overrides", nargs="*", help="agelatent-eval overrides, e.g. protocol.num_faces=32")
    args = parser.parse_args()
    out = args.out or Path("results/curves") / args.run.name
    cfg = compose_config("eval", ["logger=none", *args.overrides])
    run_job(
        cfg,
        RunDir(out),
        lambda cfg, job: {"points": len(curves(args.run, job.path, args.overrides, args.every))},
    )


if __name__ == "__main__":
    main()
