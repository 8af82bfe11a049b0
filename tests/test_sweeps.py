"""Hydra multiruns of agelatent-train: every experiment composes, a failing job does not stop the others,
and the submitit launcher runs jobs as separate processes with their W&B runs grouped per sweep."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from agelatent.cli.train import validate
from agelatent.config import CONFIG_DIR, compose_config
from agelatent.evaluation.comparison import validate as validate_eval
from agelatent.reports.wandb_offline import read_offline_run
from agelatent.runs import RunDir

ALL = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
#: ``tune_<editor>`` experiments are agelatent-eval sweeps (baselines tuned on validation faces); the rest train
TUNE = [e for e in ALL if e.startswith("tune_")]
EXPERIMENTS = [e for e in ALL if e not in TUNE]


def sweep_combinations(experiment: str, entry: str = "train") -> list[list[str]]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose(entry, [f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    return [list(c) for c in itertools.product(*(_choices(k, str(v)) for k, v in params.items()))]


def _choices(key: str, values: str) -> list[str]:
    """``a,b`` -> [key=a, key=b]; list values (``[],[identity,gender]``) split at top-level commas only."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(values + ","):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(f"{key}={values[start:i].strip()}")
            start = i + 1
    return out


def test_there_are_experiments_to_check():
    assert {"table2_identity", "table3_reward_ablation", "table4_conditioning"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_experiment_composes_and_validates(experiment):
    combos = sweep_combinations(experiment)
    assert combos
    for overrides in combos:
        validate(
            compose_config("train", [f"experiment={experiment}", "profile=debug", *overrides])
        )  # builds the env/SAC/reward configs: every error a job would hit before training


@pytest.mark.parametrize("experiment", TUNE)
def test_every_tuning_job_composes_validates_and_chooses_on_validation_faces(experiment):
    editor = experiment.removeprefix("tune_")
    assert editor in compose_config("eval").editor_settings
    combos = sweep_combinations(experiment, "eval")
    assert len(combos) >= 3
    for overrides in combos:
        assert all(o.startswith(f"editor_settings.{editor}.") for o in overrides)  # only its own knobs
        cfg = compose_config("eval", [f"experiment={experiment}", *overrides])
        assert cfg.editors == [editor] and cfg.optimized_metric == f"{editor}/success_rate"
        assert cfg.protocol.first_seed == cfg.splits.validation  # never the test faces
        validate_eval(cfg)


def multirun(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "agelatent.cli.train", "-m", "profile=debug", "device=cpu", "threads=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
    ]  # fmt: skip
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path, model_files):
    proc = multirun(tmp_path, "identity.hard_bound=0.4,0.9,0.5", "logger=none")
    assert proc.returncode != 0  # the sweep reports the failure...
    sweep = tmp_path / "sweep"
    assert "hard_bound=0.9" in RunDir(sweep / "1").failed.read_text()
    for ok in ("0", "2"):  # ...but the jobs before and after it ran to the end
        run = RunDir(sweep / ok)
        assert json.loads(run.summary.read_text())["env_steps"] == 48 and not run.failed.exists()


@pytest.mark.slow
def test_submitit_local_runs_jobs_in_their_own_processes_grouped_in_wandb(tmp_path, model_files):
    proc = multirun(tmp_path, "hydra/launcher=local_processes", "identity=loose,strict")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    logs = list((sweep / ".submitit").rglob("*_log.out"))  # submitit's per-process logs
    assert len(logs) >= 2
    runs = []
    for job in ("0", "1"):
        assert json.loads(RunDir(sweep / job).summary.read_text())["env_steps"] == 48
        (offline,) = (sweep / job / "wandb").glob("offline-run-*")
        runs.append(read_offline_run(offline))
    assert {r.group for r in runs} == {"sweep"}  # grouped by the sweep directory's name
    assert sorted(r.config["identity"]["hard_bound"] for r in runs) == [0.4, 0.6]
    assert len({r.run_id for r in runs}) == 2


@pytest.mark.slow
def test_a_tiny_optuna_search_optimises_the_validation_success(tmp_path, model_files):
    proc = multirun(
        tmp_path,
        "hparams_search=sac_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        "logger=none",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [RunDir(sweep / str(i)) for i in range(2)]
    values = [json.loads(t.summary.read_text())["success_rate"] for t in trials]
    assert best["best_value"] == pytest.approx(max(values))  # the job guard handed optuna the metric
    # every trial was judged on validation faces, and tried its own settings
    for t in trials:
        with open(t.path / "eval.csv") as f:
            seeds = {int(row["seed"]) for row in csv.DictReader(f)}
        assert seeds == {500_000, 500_001}
    lrs = {t.load_config().agent.policy_lr for t in trials}
    assert len(lrs) == 2 and all(1e-4 <= lr <= 1e-3 for lr in lrs)


@pytest.mark.slow
def test_a_tuning_sweep_ranks_its_jobs_and_names_the_best_setting(tmp_path, model_files):
    """``make tune``'s two steps on two faces: a real agelatent-eval multirun, then the ranking."""
    sweep = tmp_path / "tune"
    cmd = [
        sys.executable, "-m", "agelatent.cli.evaluate", "-m", "experiment=tune_local_linear_walk",
        f"hydra.sweep.dir={sweep}", "device=cpu", "threads=1", "logger=none",
        "protocol.num_faces=2", "protocol.targets=[60]",
        "editor_settings.local_linear_walk.max_years_per_step=0.1,8.0",  # 0.1 y/step cannot reach 60
        "editor_settings.local_linear_walk.max_step_norm=1.0", "editor_settings.local_linear_walk.keep=[]",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranked = subprocess.run(
        [sys.executable, "experiments/tuning.py", str(sweep)], capture_output=True, text=True, env=env
    )
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    with open(sweep / "tuning.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"].split()[0] for r in rows] == ["max_years_per_step=8.0", "max_years_per_step=0.1"]
    assert float(rows[0]["success_rate"]) > float(rows[1]["success_rate"]) == 0.0
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["best"]["editor_settings.local_linear_walk.max_years_per_step"] == "8.0"
    for job in ("0", "1"):  # judged on validation faces
        with open(sweep / job / "edits.csv", newline="") as f:
            assert {int(r["seed"]) for r in csv.DictReader(f)} == {500_000, 500_001}
