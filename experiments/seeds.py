"""Mean ± standard deviation over training seeds of each configuration (:mod:`agelatent.evaluation.seeds`).

Each argument is one configuration: its runs as ``<eval dir>:<editor>``, separated by commas (one
``agelatent-eval`` output directory per training seed, all on the same protocol). Prints a markdown table,
one row per configuration.

    python experiments/seeds.py results/eval/s0:sac_policy,results/eval/s1:sac_policy,results/eval/s2:sac_policy \
        results/eval/s0:local_linear_walk
"""

from __future__ import annotations

import argparse

from agelatent.evaluation.paired import eval_runs
from agelatent.evaluation.seeds import DEFAULT_METRICS, seed_spread


def table(configs: list[str], metrics: list[str]) -> list[str]:
    """The markdown table lines."""
    lines = [
        "| configuration | runs | " + " | ".join(metrics) + " |",
        "| --- | --- |" + " --- |" * len(metrics),
    ]
    for spec in configs:
        runs = [(directory / "results.csv", editor) for directory, editor in eval_runs(spec)]
        spread = seed_spread(runs, metrics)
        cells = ["--" if s is None else f"{s.mean:.3f} ± {s.sd:.3f}" for s in spread.values()]
        lines.append(f"| {spec} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+", help="<eval dir>:<editor>[,<eval dir>:<editor>...]")
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), help="results.csv columns to report"
    )
    args = parser.parse_args()
    print("\n".join(table(args.configs, args.metrics)))


if __name__ == "__main__":
    main()
