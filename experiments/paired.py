"""Paired comparison of editors on the same edits (exact McNemar test and a paired bootstrap of the difference).

Each argument is ``<eval dir>:<editor>`` -- an ``agelatent-eval`` output directory and an editor in its
``edits.csv``. The first is compared with each of the others on the edits they share (same start seed and
target): success and robust success, the edits only one of them got right, the exact McNemar p-value, and the
difference in success rate with a 95% paired-bootstrap interval.

    python experiments/paired.py results/eval/amortized_test:sac_policy results/eval/real_edits_test:local_linear_walk

The success window and identity bound are the eval config's (``protocol.success_window_years``,
``identity.hard_bound``); pass overrides after ``--``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agelatent.config import compose_config
from agelatent.evaluation.paired import edit_outcomes, mcnemar, paired_bootstrap


def compare(a: str, others: list[str], window: float, bound: float) -> list[str]:
    """The comparison as markdown table lines."""

    def load(spec: str):
        directory, _, editor = spec.rpartition(":")
        return editor, edit_outcomes(Path(directory) / "edits.csv", editor, window, bound)

    name_a, first = load(a)
    lines = [
        "| A | B | edits | judge | A | B | only A | only B | McNemar p | A − B [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in others:
        name_b, second = load(spec)
        keys = sorted(first.keys() & second.keys())
        if not keys:
            raise ValueError(
                f"{a} and {spec} share no edits (same seed and target): run them on the same protocol"
            )
        for j, judge in enumerate(("success", "robust success")):
            x = [first[k][j] for k in keys]
            y = [second[k][j] for k in keys]
            test = mcnemar(x, y)
            diff, low, high = paired_bootstrap(x, y)
            lines.append(
                f"| {a} | {spec} | {len(keys)} | {judge} | {sum(x) / len(x):.3f} | {sum(y) / len(y):.3f} | "
                f"{test.a_only} | {test.b_only} | {test.p:.3g} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", help="<eval dir>:<editor>, compared with each of the others")
    parser.add_argument("others", nargs="+", help="<eval dir>:<editor>")
    parser.add_argument("--overrides", nargs="*", default=[], help="agelatent-eval config overrides")
    args = parser.parse_args()
    cfg = compose_config("eval", args.overrides)
    print(
        "\n".join(
            compare(args.first, args.others, cfg.protocol.success_window_years, cfg.identity.hard_bound)
        )
    )


if __name__ == "__main__":
    main()
