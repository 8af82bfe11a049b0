"""Paired comparisons of editors on the same edits: the exact McNemar test, the paired bootstrap, and reading
per-edit outcomes back from ``edits.csv``."""

from __future__ import annotations

import math

import pytest

from agelatent.evaluation.paired import edit_outcomes, mcnemar, paired_bootstrap


def binomial_two_sided(a_only: int, b_only: int) -> float:
    """The exact test written out: the chance of a split at least this uneven among fair coins."""
    n = a_only + b_only
    probabilities = [math.comb(n, i) / 2**n for i in range(n + 1)]
    observed = probabilities[a_only]
    return min(1.0, sum(p for p in probabilities if p <= observed + 1e-15))


@pytest.mark.parametrize(("a_only", "b_only"), [(9, 6), (10, 0), (45, 19), (3, 3), (0, 0), (1, 7)])
def test_mcnemar_counts_only_the_discordant_edits_and_is_exact(a_only, b_only):
    both, neither = 40, 25
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    test = mcnemar(a, b)
    assert (test.edits, test.a_only, test.b_only) == (len(a), a_only, b_only)
    assert test.p == pytest.approx(binomial_two_sided(a_only, b_only), rel=1e-12)
    assert mcnemar(b, a).p == pytest.approx(test.p)  # symmetric
    assert test.difference == pytest.approx((a_only - b_only) / len(a))


def test_mcnemar_refuses_unpaired_outcomes():
    with pytest.raises(ValueError, match="two equal-length, non-empty 1-D sequences"):
        mcnemar([True, False], [True])


def test_the_paired_bootstrap_brackets_the_difference():
    a = [True] * 60 + [False] * 40
    b = [True] * 45 + [False] * 55  # every edit B gets, A gets too: A - B = 0.15
    diff, low, high = paired_bootstrap(a, b, draws=4000)
    assert diff == pytest.approx(0.15)
    assert 0.07 < low < 0.15 < high < 0.23
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_edit_outcomes_judge_both_readings_and_refuse_files_without_the_clean_one(tmp_path):
    header = "editor,seed,target,start_age,final_age,age_error,similarity,outcome,steps,world_calls"
    rows = [
        "walk,1,40.0,25.0,41.0,1.0,0.80,success,3,4,47.0",  # robust reading in, clean reading out
        "walk,2,40.0,25.0,42.0,2.0,0.80,success,3,4,39.0",  # both in
        "walk,3,40.0,25.0,42.0,2.0,0.40,identity_lost,3,4,39.0",  # identity lost
        "other,1,40.0,25.0,20.0,20.0,0.90,timeout,10,11,20.0",
    ]
    path = tmp_path / "edits.csv"
    path.write_text("\n".join([header + ",final_clean_age", *rows]) + "\n")
    assert edit_outcomes(path, "walk", 5.0, 0.5) == {
        (1, 40.0): (False, False),
        (2, 40.0): (True, True),
        (3, 40.0): (False, False),
    }
    with pytest.raises(ValueError, match="no rows of editor 'nobody'"):
        edit_outcomes(path, "nobody", 5.0, 0.5)
    path.write_text("\n".join([header, *(r.rsplit(",", 1)[0] for r in rows)]) + "\n")
    with pytest.raises(ValueError, match="no final_clean_age column"):
        edit_outcomes(path, "walk", 5.0, 0.5)
