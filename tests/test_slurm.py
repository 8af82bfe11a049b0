"""Sweeps through a real SLURM (``make slurm-up``: cluster/slurm.sh), submitted by
``hydra/launcher=slurm_dev``: array jobs whose runs, W&B runs and failures land in the sweep directory;
training jobs that are pre-empted, requeued or warned of their time limit and resume to an uninterrupted
run's weights; an optuna search that parallel jobs share through its storage.

Marked ``slurm``: skipped, with the reason, where no slurmctld answers -- unless ``AGELATENT_SLURM=required``
(what ``.ci/run`` sets after bringing the cluster up), which turns that into a failure."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import torch

from agelatent.cluster import FIX, SlurmUnavailable, check_controller
from agelatent.reports.wandb_offline import read_offline_run
from agelatent.runs import RunDir
from agelatent.testing.faults import HoldAt

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

#: a debug run whose resumption repeats an uninterrupted one exactly (tests/test_train.py shows it in-process)
EXACT = ("profile=debug", "logger=none", "agent.checkpoint_replay=true", "device=cpu", "threads=1")
#: hold training after env step 24 until a signal comes (every 4th batched step of 4 envs is checkpointed:
#: 16, 32, 48 -- so a run stopped at 28 loses work unless the signal makes it checkpoint)
HOLD = "+callbacks.hold={_target_:agelatent.testing.faults.HoldAt,env_steps:24}"
ENV = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
DEADLINE_S = 600


@pytest.fixture(scope="module")
def slurm() -> None:
    try:
        check_controller()
    except SlurmUnavailable as missing:
        if os.environ.get("AGELATENT_SLURM") == "required":
            pytest.fail(f"AGELATENT_SLURM=required but {missing}")
        pytest.skip(str(missing))


@pytest.fixture(autouse=True)
def cancel_leftovers(tmp_path):
    """Jobs of a test that failed half-way (one holding at its env step) are cancelled, not left running."""
    yield
    jobs = job_ids(tmp_path / "sweep") if (tmp_path / "sweep" / ".submitit").is_dir() else set()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


def sweep(tmp_path: Path, *overrides: str, entry: str = "train") -> subprocess.Popen:
    """Start ``agelatent-<entry> -m hydra/launcher=slurm_dev …`` into ``<tmp_path>/sweep`` (it waits for
    its jobs)."""
    cmd = [
        sys.executable, "-m", f"agelatent.cli.{entry}", "-m", "hydra/launcher=slurm_dev",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=DEADLINE_S)
    return proc.returncode, out


def job_ids(sweep_dir: Path) -> set[str]:
    folders = (sweep_dir / ".submitit").glob("*")
    return {m[1] for p in folders if (m := re.fullmatch(r"(\d+)(_\d+)?", p.name))}


def array_id(sweep_dir: Path) -> str:
    """The SLURM job id of the sweep (submitit's folders: ``.submitit/<id>`` for a sweep of one job, else
    ``.submitit/<array id>_<task>``)."""
    (job,) = job_ids(sweep_dir)
    return job


def sacct(job: str) -> list[tuple[str, str]]:
    """(task, state) of every run of the job's tasks, requeued runs included, once SLURM has recorded the
    end of each (a sweep may collect a job's result before its process has exited)."""
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            ["sacct", "-D", "-X", "-P", "-n", "-o", "JobID,State", "-j", job],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        runs = [tuple(line.split("|")) for line in out.splitlines() if line]
        last = {task: state for task, state in runs}
        if runs and not set(last.values()) & {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"}:
            return runs
        assert time.monotonic() < deadline, f"job {job} has not ended in SLURM's accounting: {runs}"
        time.sleep(0.5)


def task_times(job: str) -> list[tuple[datetime, datetime]]:
    """(start, end) of each task of an array job that has ended, in task order."""
    sacct(job)  # until SLURM has recorded their ends
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-o", "JobID,Start,End", "-j", job],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = sorted(
        (line.split("|") for line in out.splitlines() if line), key=lambda r: int(r[0].split("_")[1])
    )
    return [(datetime.fromisoformat(start), datetime.fromisoformat(end)) for _, start, end in rows]


def wait_until(what: str, ready, proc: subprocess.Popen) -> None:
    """Poll ``ready()`` until true; fail if the sweep ends first or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(0.2)


def held(run: RunDir) -> bool:
    return (run.path / HoldAt.MARKER).is_file()


def weights(run: RunDir) -> dict[str, torch.Tensor]:
    return torch.load(run.checkpoint, weights_only=True)["state_dict"]


def job_log(sweep_dir: Path, job: str) -> str:
    """submitit's stdout and stderr of a job, every run of it (they are appended to)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").glob(f"{job}/*_log.*")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_files) -> dict[str, torch.Tensor]:
    """The final weights of the debug run trained straight through, in a process of its own."""
    runs = tmp_path_factory.mktemp("straight")
    cmd = [sys.executable, "-m", "agelatent.cli.train", *EXACT, f"paths.runs_dir={runs}", "run_name=straight"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert logged_steps(RunDir(runs / "straight")) == UNINTERRUPTED_STEPS
    return weights(RunDir(runs / "straight"))


#: the env steps metrics.csv logs in a debug run (every 2nd batched step of 4 envs); a run that started over,
#: or resumed from an older checkpoint than the one its signal wrote, would log some of them twice
UNINTERRUPTED_STEPS = [8, 16, 24, 32, 40, 48]


def logged_steps(run: RunDir) -> list[int]:
    with open(run.metrics, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def assert_same_weights(run: RunDir, reference: dict[str, torch.Tensor]) -> None:
    mine = weights(run)
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(mine[key], value), key


def test_a_sweep_through_slurmctld_lands_every_run_and_a_failing_task_stops_no_other(
    tmp_path, slurm, model_files
):
    proc = sweep(tmp_path, "profile=debug", "device=cpu", "threads=1", "identity.hard_bound=0.4,0.9,0.5")
    code, out = finish(proc)
    assert code != 0  # job 1's bound is above the soft threshold: the sweep reports it...
    sweep_dir = tmp_path / "sweep"
    assert "hard_bound=0.9" in RunDir(sweep_dir / "1").failed.read_text()
    runs = []
    for ok in ("0", "2"):  # ...and the other tasks of the array ran to the end
        run = RunDir(sweep_dir / ok)
        assert json.loads(run.summary.read_text())["env_steps"] == 48 and not run.failed.exists()
        (offline,) = (run.path / "wandb").glob("offline-run-*")
        runs.append(read_offline_run(offline))
    assert {r.group for r in runs} == {"sweep"} and len({r.run_id for r in runs}) == 2
    job = array_id(sweep_dir)
    # SLURM ran all three tasks; the job guard recorded the failure inside task 1, which itself ended cleanly
    assert sacct(job) == [(f"{job}_{i}", "COMPLETED") for i in range(3)]


def test_an_evaluation_sweep_through_slurmctld_collects_every_job(tmp_path, slurm, model_files):
    proc = sweep(
        tmp_path, "experiment=tune_local_linear_walk", "device=cpu", "threads=1", "logger=none",
        "protocol.num_faces=2", "protocol.targets=[60]",
        "editor_settings.local_linear_walk.max_years_per_step=0.1,8.0",
        "editor_settings.local_linear_walk.max_step_norm=1.0", "editor_settings.local_linear_walk.keep=[]",
        entry="evaluate",
    )  # fmt: skip
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    sweep_dir = tmp_path / "sweep"
    for job in ("0", "1"):
        assert (sweep_dir / job / "edits.csv").is_file() and not RunDir(sweep_dir / job).failed.exists()
    job = array_id(sweep_dir)
    assert sacct(job) == [(f"{job}_{i}", "COMPLETED") for i in range(2)]


def test_a_job_preempted_by_a_high_priority_job_is_requeued_and_ends_with_uninterrupted_weights(
    tmp_path, slurm, uninterrupted
):
    partitions = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    if not {"low*", "high"} <= set(partitions):
        pytest.skip(
            f"needs the low/high partitions of cluster/slurm.sh (pre-emption); this cluster has {partitions}"
        )
    proc = sweep(tmp_path, *EXACT, HOLD)
    run = RunDir(tmp_path / "sweep" / "0")
    wait_until("training reached env step 24", lambda: held(run), proc)
    # a job of the high partition that needs the whole node: SLURM pre-empts the low one to make room
    high = subprocess.run(
        ["sbatch", "--parsable", "-p", "high", "--exclusive", f"--output={tmp_path}/high.out", "--wrap", "true"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    job = array_id(tmp_path / "sweep")
    log = job_log(tmp_path / "sweep", job)
    assert "interrupted by SIGTERM: stopped at env step 28/48" in log  # checkpointed after the step under way
    assert [state for _, state in sacct(job)] == ["REQUEUED", "COMPLETED"]
    assert sacct(high) == [(high, "COMPLETED")]
    assert logged_steps(run) == UNINTERRUPTED_STEPS  # resumed from env step 28: nothing logged twice
    assert json.loads(run.summary.read_text())["env_steps"] == 48 and not run.failed.exists()
    assert_same_weights(run, uninterrupted)


def test_a_time_limit_warning_or_a_requeue_checkpoints_and_the_jobs_resume_to_uninterrupted_weights(
    tmp_path, slurm, uninterrupted
):
    """Job 0 gets SIGUSR2, what SLURM sends ``signal_delay_s`` before ``timeout_min`` runs out (submitit
    requeues it); job 1 is requeued by ``scontrol requeue`` (SIGTERM, and SLURM requeues it)."""
    proc = sweep(tmp_path, *EXACT, HOLD, "seed=0,0")  # two identical jobs
    sweep_dir = tmp_path / "sweep"
    runs = [RunDir(sweep_dir / str(i)) for i in range(2)]
    wait_until("both jobs reached env step 24", lambda: all(held(r) for r in runs), proc)
    job = array_id(sweep_dir)
    subprocess.run(["scancel", "--signal=USR2", f"{job}_0"], check=True)
    subprocess.run(["scontrol", "requeue", f"{job}_1"], check=True)
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    assert "interrupted by SIGUSR2: stopped at env step 28/48" in job_log(sweep_dir, f"{job}_0")
    assert "interrupted by SIGTERM: stopped at env step 28/48" in job_log(sweep_dir, f"{job}_1")
    states = sacct(job)
    for task in (f"{job}_0", f"{job}_1"):
        assert [s for j, s in states if j == task] == ["REQUEUED", "COMPLETED"], states
    for run in runs:
        assert logged_steps(run) == UNINTERRUPTED_STEPS
        assert json.loads(run.summary.read_text())["env_steps"] == 48 and not run.failed.exists()
        assert_same_weights(run, uninterrupted)


def test_a_cancelled_job_stays_cancelled_with_its_checkpoint(tmp_path, slurm, model_files):
    """``scancel`` is not a pre-emption: the job checkpoints and ends, and does not requeue itself."""
    proc = sweep(tmp_path, *EXACT, HOLD)
    run = RunDir(tmp_path / "sweep" / "0")
    wait_until("training reached env step 24", lambda: held(run), proc)
    job = array_id(tmp_path / "sweep")
    subprocess.run(["scancel", job], check=True)
    code, out = finish(proc)
    assert code != 0  # the sweep reports the job it could not collect
    assert "interrupted by SIGTERM: stopped at env step 28/48" in run.failed.read_text()
    assert "not requeued: SLURM has this job COMPLETING" in job_log(tmp_path / "sweep", job)
    assert torch.load(run.checkpoint, weights_only=True)["sac"]["env_steps"] == 28
    assert [state.split()[0] for _, state in sacct(job)] == ["CANCELLED"]  # "CANCELLED by <uid>"


def test_an_optuna_search_of_two_parallel_jobs_records_every_trial_in_its_storage_and_continues(
    tmp_path, slurm, model_files
):
    """4 trials, 2 at a time (each batch one SLURM array of 2 tasks running side by side), told to one study
    in an SQLite file; a second search with the same storage and study adds its trials to the same study."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = (
        "hparams_search=sac_optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.n_startup_trials=2", "profile=debug", "device=cpu", "threads=1", "logger=none",
    )  # fmt: skip
    code, out = finish(sweep(tmp_path, *search, "hydra.sweeper.n_trials=4"))
    assert code == 0, out[-3000:]
    sweep_dir = tmp_path / "sweep"
    arrays = sorted(job_ids(sweep_dir), key=int)
    assert len(arrays) == 2  # one array per batch of n_jobs trials
    for job in arrays:
        (first_start, first_end), (second_start, second_end) = task_times(job)
        assert second_start < first_end and first_start < second_end  # the batch's two jobs overlapped
    study = optuna.load_study(study_name="sac_optuna", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    results = [json.loads(RunDir(sweep_dir / str(i)).summary.read_text())["success_rate"] for i in range(4)]
    assert sorted(t.value for t in study.trials) == sorted(results)  # each job's metric reached the study
    assert len({t.params["agent.policy_lr"] for t in study.trials}) == 4

    more = tmp_path / "more"  # continuing: the same storage and study name, a sweep directory of its own
    more.mkdir()
    code, out = finish(sweep(more, *search, "hydra.sweeper.n_trials=2"))
    assert code == 0, out[-3000:]
    study = optuna.load_study(study_name="sac_optuna", storage=storage)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_sweep_with_no_controller_says_so_and_submits_nothing(tmp_path):
    if shutil.which("scontrol") is None:
        pytest.skip("needs SLURM's client (scontrol) to ask a controller that is not there")
    conf = tmp_path / "slurm.conf"  # a cluster whose controller port nobody listens on
    conf.write_text(
        "ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=9\nAuthType=auth/munge\n"
        "NodeName=localhost\nPartitionName=low Nodes=localhost\n"
    )
    cmd = [
        sys.executable, "-m", "agelatent.cli.train", "-m", "hydra/launcher=slurm", "profile=debug",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=ENV | {"SLURM_CONF": str(conf)}, timeout=120
    )
    assert proc.returncode != 0
    assert "no slurmctld answers (`scontrol ping`: " in proc.stderr and FIX in proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()


def test_a_sweep_with_no_slurm_client_says_so(tmp_path):
    cmd = [
        sys.executable, "-m", "agelatent.cli.train", "-m", "hydra/launcher=slurm", "profile=debug",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    empty = tmp_path / "bin"  # a PATH without sbatch, scontrol and sacct
    empty.mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV | {"PATH": str(empty)}, timeout=120)
    assert proc.returncode != 0
    assert "no SLURM client here (sbatch, scontrol, sacct not on PATH): " + FIX in proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()
