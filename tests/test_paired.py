"""Paired comparisons of editors on the same edits: the exact McNemar test, the paired bootstrap, and reading
per-edit outcomes back from ``edits.csv``."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agelatent.editors import EditResult
from agelatent.env.outcome import Outcome
from agelatent.evaluation.metrics import edit_metrics
from agelatent.evaluation.paired import edit_outcomes, eval_runs, mcnemar, pair_runs, paired_bootstrap
from agelatent.evaluation.seeds import seed_spread
from agelatent.reports.tables import write_edits_csv, write_table

ROOT = Path(__file__).resolve().parents[1]


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


def edit_result(editor, final_robust, final_clean, similarity, outcome):
    """An EditResult of len(final_robust) one-step edits towards 40 years from 25-year faces."""
    b = len(final_robust)
    z = torch.zeros(b, 2)
    images = torch.zeros(b, 3, 2, 2)
    return EditResult(
        editor=editor,
        start_latents=z,
        targets=torch.full((b,), 40.0),
        latents=torch.stack([z, z]),
        ages=torch.stack([torch.full((b,), 25.0), torch.tensor(final_robust)]),
        similarity=torch.stack([torch.ones(b), torch.tensor(similarity)]),
        p_male=torch.full((2, b), 0.9),
        final_images=images,
        start_images=images,
        outcome=torch.tensor([int(o) for o in outcome]),
        steps=torch.ones(b, dtype=torch.long),
        world_calls=2 * b,
        row_world_calls=torch.full((b,), 2.0),
        typicality=torch.zeros(b),
        seconds=0.1,
        clean_ages=torch.stack([torch.full((b,), 25.0), torch.tensor(final_clean)]),
    )


def test_edits_csv_carries_the_protocols_verdict_and_pairing_reads_it_back(tmp_path):
    walk = edit_result(
        "walk",
        final_robust=[41.0, 42.0, 42.0, 44.5],
        final_clean=[47.0, 39.0, 39.0, 44.5],
        similarity=[0.8, 0.8, 0.4, 0.8],
        # the env's own outcome (its 3-year termination) is not the verdict: the last edit timed out at 4.5
        # years from the target, inside the protocol's 5-year window
        outcome=[Outcome.TIMEOUT, Outcome.SUCCESS, Outcome.IDENTITY_LOST, Outcome.TIMEOUT],
    )
    other = edit_result("other", [20.0] * 4, [20.0] * 4, [0.9] * 4, [Outcome.TIMEOUT] * 4)
    path = tmp_path / "edits.csv"
    write_edits_csv(path, [walk, other], seeds=[1, 2, 3, 4], hard_bound=0.5, success_window_years=5.0)
    outcomes = edit_outcomes(path, "walk")
    assert outcomes == {
        (1, 40.0): (False, False),  # robust reading in, clean reading out
        (2, 40.0): (True, True),
        (3, 40.0): (False, False),  # identity lost
        (4, 40.0): (True, True),
    }
    verdict = edit_metrics(walk, 0.5, 5.0)  # the same verdicts as the summary's rates
    assert [ok for ok, _ in outcomes.values()] == verdict["success_rate"].bool().tolist()
    assert [ok for _, ok in outcomes.values()] == verdict["robust_success_rate"].bool().tolist()
    with pytest.raises(ValueError, match="no rows of editor 'nobody'"):
        edit_outcomes(path, "nobody")


def test_edit_outcomes_refuse_files_without_the_verdict(tmp_path):
    path = tmp_path / "edits.csv"
    path.write_text(
        "editor,seed,target,start_age,final_age,age_error,similarity,outcome,steps,world_calls,final_clean_age\n"
        "walk,1,40.0,25.0,41.0,1.0,0.80,success,3,4,41.0\n"
    )
    with pytest.raises(ValueError, match="no robust_success or success column .* rerun agelatent-eval"):
        edit_outcomes(path, "walk")


def test_runs_pair_one_to_one_on_shared_edits_and_a_single_run_pairs_with_each():
    s0 = {(1, 40.0): (True, True), (2, 40.0): (False, False), (3, 40.0): (True, False)}
    s1 = {(1, 40.0): (False, False), (2, 40.0): (True, True)}  # edit 3 missing: only shared edits pair
    walk = {(1, 40.0): (True, True), (2, 40.0): (True, False), (3, 40.0): (False, False)}
    x, y = pair_runs([s0, s1], [walk, walk])
    assert x == [s0[1, 40.0], s0[2, 40.0], s0[3, 40.0], s1[1, 40.0], s1[2, 40.0]]
    assert y == [walk[1, 40.0], walk[2, 40.0], walk[3, 40.0], walk[1, 40.0], walk[2, 40.0]]
    assert pair_runs([s0, s1], [walk]) == (x, y)  # one run on a side pairs with every run of the other
    assert pair_runs([walk], [s0, s1]) == (y, x)
    with pytest.raises(ValueError, match="pair runs one to one: got 2 and 3 runs"):
        pair_runs([s0, s1], [walk, walk, walk])
    with pytest.raises(ValueError, match="run pair 1 shares no edits"):
        pair_runs([s0, {(9, 20.0): (True, True)}], [walk])


def test_the_paired_script_pools_seed_runs_against_one_baseline(tmp_path):
    """``experiments/paired.py A1,A2 B``: the two runs' edits each paired with B's, pooled into one test."""
    runs = {
        "s0": edit_result("sac_policy", [40.0, 60.0], [40.0, 60.0], [0.8, 0.8], [Outcome.SUCCESS] * 2),
        "s1": edit_result("sac_policy", [60.0, 41.0], [60.0, 41.0], [0.8, 0.8], [Outcome.SUCCESS] * 2),
        "walk": edit_result("walk", [60.0, 60.0], [60.0, 60.0], [0.8, 0.8], [Outcome.TIMEOUT] * 2),
    }
    for name, result in runs.items():
        (tmp_path / name).mkdir()
        write_edits_csv(tmp_path / name / "edits.csv", [result], [7, 8], 0.5, 5.0)
    a = f"{tmp_path / 's0'}:sac_policy,{tmp_path / 's1'}:sac_policy"
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "paired.py"), a, f"{tmp_path / 'walk'}:walk"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if "| success |" in line)
    # 4 pooled edits: the policy gets 2 (one per seed), the walk none; McNemar's exact p for 2 vs 0 is 0.5
    assert [c.strip() for c in row.split("|")[3:10]] == ["4", "success", "0.500", "0.000", "2", "0", "0.5"]


def test_seed_spread_gives_mean_and_sd_over_runs_and_marks_unmeasured_metrics(tmp_path):
    """Three seeds' results.csv (written by the evaluation's own table writer): each metric's mean and sample
    standard deviation over the runs; a metric one run did not measure is reported as missing, not averaged."""
    rates = [0.5, 0.6, 0.7]
    for i, rate in enumerate(rates):
        row = {"editor": "sac_policy", "success_rate": rate, "world_calls_per_edit": 8.0}
        if i:
            row["realness/kept"] = 0.9
        (tmp_path / f"s{i}").mkdir()
        write_table([row, {"editor": "walk", "success_rate": 0.9}], tmp_path / f"s{i}" / "results", title="t")
    runs = [(tmp_path / f"s{i}" / "results.csv", "sac_policy") for i in range(3)]
    spread = seed_spread(runs, ["success_rate", "world_calls_per_edit", "realness/kept"])
    assert spread["success_rate"].runs == 3
    assert spread["success_rate"].mean == pytest.approx(0.6)
    assert spread["success_rate"].sd == pytest.approx(0.1)
    assert spread["world_calls_per_edit"].sd == 0.0
    assert spread["realness/kept"] is None
    with pytest.raises(ValueError, match="no row of editor 'gradient_descent'"):
        seed_spread([(runs[0][0], "gradient_descent")])
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "seeds.py"),
            ",".join(f"{tmp_path / f's{i}'}:sac_policy" for i in range(3)),
            f"{tmp_path / 's0'}:walk",
            "--metrics",
            "success_rate",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| /")]
    assert [r.split("|")[2:4] for r in rows] == [[" 3 ", " 0.600 ± 0.100 "], [" 1 ", " 0.900 ± 0.000 "]]


def test_eval_run_specs_parse_and_a_run_without_editor_is_refused():
    """The scripts' ``<eval dir>:<editor>[,...]`` form: directories may hold colons; a part without one is named."""
    assert eval_runs("results/eval/s0:sac_policy,a:b/s1:walk") == [
        (Path("results/eval/s0"), "sac_policy"),
        (Path("a:b/s1"), "walk"),
    ]
    with pytest.raises(ValueError, match=r"'results/eval/s1': give each run as <eval dir>:<editor>"):
        eval_runs("results/eval/s0:sac_policy,results/eval/s1")
