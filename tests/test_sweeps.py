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
from agelatent.reports.wandb_offline import read_offline_run
from agelatent.runs import RunDir

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def sweep_combinations(experiment: str) -> list[list[str]]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("train", [f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    choices = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(c) for c in itertools.product(*choices)]


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
