"""Paired comparison of editors on the same edits (exact McNemar test and a paired bootstrap of the difference).

Each argument is ``<eval dir>:<editor>`` -- an ``agelatent-eval`` output directory and an editor in its
``edits.csv``. The first is compared with each of the others on the edits they share (same start seed and
target): success and robust success, the edits only one of them got right, the exact McNemar p-value, and the
difference in success rate with a 95% paired-bootstrap interval.

    python experiments/paired.py results/eval/amortized_test:sac_policy results/eval/real_edits_test:local_linear_walk

An argument may also list several runs separated by commas (training seeds, say, each evaluated on the same
edits): two such sides are paired run by run, in the order given, and pooled; a side of one run is paired with
every run of the other (its edits then count once per run: the p-value is optimistic, so test each run too).

    python experiments/paired.py results/eval/s0:sac_policy,results/eval/s1:sac_policy results/eval/s0:local_linear_walk

The verdicts are the ones ``agelatent-eval`` wrote into ``edits.csv`` (its ``success`` and ``robust_success``
columns), judged by the protocol the evaluation ran.
"""

from __future__ import annotations

import argparse

from agelatent.evaluation.paired import edit_outcomes, eval_runs, mcnemar, pair_runs, paired_bootstrap


def compare(a: str, others: list[str]) -> list[str]:
    """The comparison as markdown table lines."""

    def load(spec: str) -> list[dict]:
        return [edit_outcomes(directory / "edits.csv", editor) for directory, editor in eval_runs(spec)]

    first = load(a)
    lines = [
        "| A | B | edits | judge | A | B | only A | only B | McNemar p | A − B [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in others:
        pairs_a, pairs_b = pair_runs(first, load(spec))
        for j, judge in enumerate(("success", "robust success")):
            x = [p[j] for p in pairs_a]
            y = [p[j] for p in pairs_b]
            test = mcnemar(x, y)
            diff, low, high = paired_bootstrap(x, y)
            lines.append(
                f"| {a} | {spec} | {len(x)} | {judge} | {sum(x) / len(x):.3f} | {sum(y) / len(y):.3f} | "
                f"{test.a_only} | {test.b_only} | {test.p:.3g} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", help="<eval dir>:<editor>, compared with each of the others")
    parser.add_argument("others", nargs="+", help="<eval dir>:<editor>")
    args = parser.parse_args()
    print("\n".join(compare(args.first, args.others)))


if __name__ == "__main__":
    main()
