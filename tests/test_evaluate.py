"""``agelatent-eval``: every editor through one protocol, with CIs, grids, an evaluator and offline W&B."""

from __future__ import annotations

import csv

import pytest
from conftest import cpu_config as cfg_for

from agelatent.cli.evaluate import run
from agelatent.cli.train import train
from agelatent.evaluation.metrics import bootstrap_ci
from agelatent.reports.wandb_offline import read_offline_run


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, model_files):
    root = tmp_path_factory.mktemp("policy")
    train(
        cfg_for("train", "profile=debug", f"paths.runs_dir={root}", "run_name=p", "logger=none"), root / "p"
    )
    return root / "p"


@pytest.fixture(scope="module")
def evaluation(policy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = cfg_for(
        "eval",
        f"policy={policy_dir}",
        "protocol.num_faces=3",
        "protocol.targets=[25,50]",
        "evaluator=[realigned,agender]",
        "evaluator.agender.natural_faces=6",
        "editor_settings.global_direction.num_samples=200",
    )
    return out, run(cfg, out)


EDITORS = list(cfg_for("eval").editors)  # conf/eval.yaml's: every editor


def test_every_editor_is_evaluated_on_the_same_edits(evaluation):
    out, rows = evaluation
    assert [r["editor"] for r in rows] == EDITORS and "sac_policy" in EDITORS
    with open(out / "edits.csv") as f:
        edits = list(csv.DictReader(f))
    assert len(edits) == len(EDITORS) * 6
    assert {int(e["seed"]) for e in edits} == {1_000_000, 1_000_001, 1_000_002}  # test faces
    for r in rows:
        mine = [e for e in edits if e["editor"] == r["editor"]]
        assert r["edits"] == 6 and r["world_calls_per_edit"] >= 1 and r["seconds_per_edit"] > 0
        # the table's numbers are the edits' numbers
        errors = [float(e["age_error"]) for e in mine]
        assert r["age_error"] == pytest.approx(sum(errors) / 6, abs=0.01)
        assert r["age_error_low"] <= r["age_error_high"]
        # the realigned evaluator re-scored the final faces: its ages differ from the reward's own
        assert r["realigned/age_error"] != pytest.approx(r["age_error"])
        # the independent model counted the edits asking for >= 10 years by the reward's start ages
        asked = sum(abs(float(e["target"]) - float(e["start_age"])) >= 10 for e in mine)
        assert r["agender/asked_edits"] == asked
        assert r["agender/confirmation_low"] <= r["agender/confirmation_high"]
    # one calibration (the same unedited faces) for every editor
    assert len({r["agender/natural_slope"] for r in rows}) == 1
    # every editor starts from the same faces with the same targets
    by_editor = {}
    for e in edits:
        by_editor.setdefault(e["editor"], []).append((e["seed"], e["target"], e["start_age"]))
    assert len({tuple(v) for v in by_editor.values()}) == 1
    lines = (out / "results.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| editor |"))
    assert "success (realigned)" in header and "confirmation (agender)" in header
    for r in rows:  # one Markdown row per editor, showing that editor's numbers
        (line,) = [line for line in lines if line.startswith(f"| {r['editor']} |")]
        assert f"{r['success_rate']:.2f} [{r['success_rate_low']:.2f}, {r['success_rate_high']:.2f}]" in line
    assert all((out / f"grid_{r['editor']}.png").is_file() for r in rows)


def test_the_policy_runs_under_its_training_mdp(evaluation, policy_dir):
    out, _ = evaluation
    with open(out / "edits.csv") as f:
        edits = list(csv.DictReader(f))
    # the debug run's max_steps=3 (not eval's env group, 10) bounds every editor, and edits that time out
    # do so at exactly 3 steps
    assert max(int(e["steps"]) for e in edits) == 3
    assert all(int(e["steps"]) == 3 for e in edits if e["outcome"] == "timeout")
    assert any(e["outcome"] == "timeout" for e in edits)


def test_results_go_to_an_offline_wandb_run_as_a_table(evaluation):
    out, rows = evaluation
    (offline,) = (out / "wandb").glob("offline-run-*")
    wb = read_offline_run(offline, wait_for_exit_s=10)
    assert wb.group == "eval" and any(t.startswith("commit:") for t in wb.tags) and wb.exit_code == 0
    assert wb.summary["sac_policy/success_rate"] == pytest.approx(rows[0]["success_rate"])
    assert any(p.name.endswith(".table.json") for p in (offline / "files" / "media").rglob("*"))


def test_bootstrap_intervals_cover_the_truth_about_95_percent_of_the_time():
    import torch

    g = torch.Generator().manual_seed(0)
    covered = 0
    for k in range(200):
        ci = bootstrap_ci((torch.rand(60, generator=g) < 0.3).float(), 500, seed=k)
        covered += ci.low <= 0.3 <= ci.high
    assert 0.88 <= covered / 200 <= 0.99  # a percentile bootstrap of a mean: close to nominal at n = 60
    small = bootstrap_ci((torch.rand(20, generator=g) < 0.3).float(), 2000, seed=0)
    large = bootstrap_ci((torch.rand(2000, generator=g) < 0.3).float(), 2000, seed=0)
    assert (large.high - large.low) < (small.high - small.low) / 4  # ~1/sqrt(n)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["editors=[sac_policy]"], "policy is null"),
        (["editors=[teleport]"], r"editors: unknown \['teleport'\]"),
        (["policy=/nonexistent/run", "editors=[sac_policy]"], "no checkpoint at /nonexistent/run"),
        (
            ["evaluator=agender", "evaluator.agender.kind=oracle", "editors=[random_walk]"],
            "evaluator.agender.kind must be one of",
        ),
        (
            ["evaluator=agender", "evaluator.agender.min_years=0", "editors=[random_walk]"],
            "evaluator.agender.min_years must be > 0",
        ),
        (
            ["editor_settings.local_linear_walk.keep=[age]", "editors=[local_linear_walk]"],
            r"editor_settings.local_linear_walk: keep must be distinct names",
        ),
        (
            ["editor_settings.global_direction.max_step_norm=0", "editors=[global_direction]"],
            "editor_settings.global_direction: max_step_norm must be a finite number > 0, got 0",
        ),
        (
            ["protocol.targets=[20,99]", "editors=[random_walk]"],
            r"protocol.targets must be ages in the age model's range \[0, 80\], got \[99\]",
        ),
    ],
)
def test_bad_eval_configs_fail_before_any_work(tmp_path, overrides, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(cfg_for("eval", *overrides), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_the_walk_gets_its_own_step_cap_and_kept_quantities_whatever_the_policy_was_trained_with(tmp_path):
    from agelatent.editors import build_editor
    from agelatent.env.latent_age import LatentAgeEnvConfig
    from agelatent.evaluation.comparison import editor_mdp

    (tmp_path / "last.ckpt").write_bytes(b"")  # the policy editor loads it only when it edits
    cfg = cfg_for(
        "eval",
        "action.keep=[]",  # a policy trained keeping nothing, with its own step cap
        "action.max_step_norm=0.5",
        "editor_settings.local_linear_walk.keep=[identity,gender]",
        "editor_settings.local_linear_walk.max_step_norm=2.5",
        f"policy={tmp_path / 'last.ckpt'}",
    )
    mdp = LatentAgeEnvConfig.from_config(cfg)
    assert mdp.action.keep == () and mdp.action.max_step_norm == 0.5  # the MDP (the policy's) as it is

    def action(name):
        return editor_mdp(build_editor(name, cfg.editor_settings[name]), mdp).action

    walk = action("local_linear_walk")
    assert (walk.mode, walk.keep, walk.max_step_norm) == ("local_linear", ("identity", "gender"), 2.5)
    assert action("sac_policy") == mdp.action
    assert action("gradient_descent").mode == "full"


def test_a_run_trained_before_an_mdp_setting_existed_still_evaluates(tmp_path, caplog, model_files):
    """Settings added later (here action.keep, env.observe_face) take the behaviour the code had before
    they existed -- keep nothing, do not observe the face -- not today's defaults, and the log names each."""
    from omegaconf import OmegaConf

    old = tmp_path / "old_run"
    train(
        cfg_for(
            "train", "profile=debug", f"paths.runs_dir={tmp_path}", "run_name=old_run", "logger=none",
            "action.keep=[]", "env.observe_face=false",
        ),
        old,
    )  # fmt: skip
    saved = OmegaConf.load(old / "config.yaml")
    del saved.action["keep"], saved.env["observe_face"]
    OmegaConf.save(saved, old / "config.yaml")
    cfg = cfg_for(
        "eval", f"policy={old}", "editors=[sac_policy]", "protocol.num_faces=1", "protocol.targets=[30]",
        "evaluator=none", "logger=none",
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        (row,) = run(cfg, tmp_path / "out")
    assert row["edits"] == 1
    assert "predates action.keep; using [], the behaviour before it" in caplog.text
    assert "predates env.observe_face; using False" in caplog.text
    assert not (
        tmp_path / "out" / "wandb"
    ).exists()  # logger=none: eval.yaml's logger.wandb.group alone is no W&B run


def test_policy_snapshots_make_learning_curves_on_validation_faces(tmp_path, model_files, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from agelatent.runs import RunDir

    run = RunDir(tmp_path / "runs" / "snap")
    train(
        cfg_for(
            "train", "profile=debug", f"paths.runs_dir={tmp_path / 'runs'}", "run_name=snap", "logger=none",
            "callbacks.policy_snapshots.every_env_steps=16",
        ),
        run.path,
    )  # fmt: skip
    assert [steps for steps, _ in run.snapshots()] == [16, 32, 48]  # the debug run's 48 env steps
    out = tmp_path / "curves"
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable, "experiments/learning_curves.py", "--run", str(run.path), "--out", str(out),
            "protocol.num_faces=2", "protocol.targets=[25,45]", "evaluator=realigned", "device=cpu",
        ],
        cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [16, 32, 48]  # the final checkpoint is the last snapshot
    assert all(int(float(r["edits"])) == 4 and "realigned/success_rate" in r for r in rows)
    assert (out / "curves.png").is_file()
    # each point is on validation faces
    with open(out / "step_00000016" / "edits.csv") as f:
        assert {int(e["seed"]) for e in csv.DictReader(f)} == {500_000, 500_001}
    # every k-th snapshot, counted back from the trained policy (what make figures plots at the full profile)
    from agelatent.evaluation.curves import curves

    few = ["protocol.num_faces=1", "protocol.targets=[25]", "evaluator=none", "device=cpu"]
    first = curves(run.path, tmp_path / "every2", few, every=2)
    assert [r["env_steps"] for r in first] == [16, 48]
    import agelatent.evaluation.curves as curves_module

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(curves_module, "evaluate", no_evaluation)
    assert curves(run.path, tmp_path / "every2", few, every=2) == first  # the points are reused
    with pytest.raises(AssertionError, match="evaluated again"):  # ...only when the same was asked
        curves(run.path, tmp_path / "every2", [*few, "seed=1"], every=2)
    with open(run.snapshot(16), "ab") as f:
        f.write(b"\0")  # other weights under the same name (a retrained run): evaluated afresh
    with pytest.raises(AssertionError, match="evaluated again"):
        curves(run.path, tmp_path / "every2", few, every=2)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        curves(run.path, tmp_path / "every0", few, every=0)
