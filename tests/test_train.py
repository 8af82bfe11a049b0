"""``agelatent-train`` end to end in its debug profile: run directory, metrics, offline W&B, resume, errors."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch
from conftest import CheckpointSteps, cpu_config
from PIL import Image

from agelatent.cli.train import train
from agelatent.reports.wandb_offline import read_offline_run
from agelatent.runs import RunDir, RunInUseError, run_job


def debug_cfg(tmp_path, *overrides):
    return cpu_config("train", "profile=debug", f"paths.runs_dir={tmp_path}", "run_name=dbg", *overrides)


def metric_rows(run_dir):
    with open(RunDir(run_dir).metrics) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, model_files):
    root = tmp_path_factory.mktemp("train")
    run_dir = root / "dbg"
    run_job(debug_cfg(root), run_dir, train)  # as agelatent-train runs it: the guard finishes the W&B run
    return root, run_dir, json.loads(RunDir(run_dir).summary.read_text())


def test_a_debug_run_writes_every_artefact(first_run):
    _, run_dir, summary = first_run
    ckpt = torch.load(RunDir(run_dir).checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["sac"]["env_steps"] == 48
    state = ckpt["state_dict"]
    assert {k.split(".")[0] for k in state} == {"actor", "critic", "critic_target", "log_alpha"}
    assert {"actor.mean.weight", "critic.q1.net.0.weight", "critic_target.q1.net.0.weight"} <= set(state)
    assert len(ckpt["optimizer_states"]) == 3  # actor, critics, entropy coefficient

    rows = metric_rows(run_dir)
    steps = [float(r["env_step"]) for r in rows if r.get("env_step")]
    assert steps == sorted(steps) and steps[-1] == 48
    assert any(r.get("episodes/success") for r in rows) and any(r.get("train/critic_loss") for r in rows)

    grid = Image.open(run_dir / "edit_grid.png")
    assert grid.width > 3 * 128 and grid.height > 2 * 128  # 2 faces x (start + 2 targets), 2x upscaled
    with open(run_dir / "eval.csv") as f:
        edits = list(csv.DictReader(f))
    assert len(edits) == 4 and {e["target"] for e in edits} == {"25.0", "45.0"}
    # the summary is computed from these very edits (validation faces), and the report shows it
    assert {int(e["seed"]) for e in edits} == {500_000, 500_001}
    cfg = RunDir(run_dir).load_config()
    window, bound = cfg.protocol.success_window_years, cfg.identity.hard_bound
    ok = [float(e["age_error"]) <= window and float(e["similarity"]) >= bound for e in edits]
    assert summary["edits"] == 4 and summary["success_rate"] == pytest.approx(sum(ok) / 4)
    assert [e["success"] == "1" for e in edits] == ok  # the file's verdict is the summary's
    assert summary["age_error"] == pytest.approx(sum(float(e["age_error"]) for e in edits) / 4, abs=0.01)
    text = (run_dir / "summary.md").read_text()
    assert f"{summary['success_rate']:.3f}" in text and f"{summary['age_error']:.3f}" in text


def test_the_offline_wandb_run_holds_config_history_and_summary(first_run):
    _, run_dir, summary = first_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(offline, wait_for_exit_s=10)
    assert run.name == "dbg" and run.group == "dbg" and run.exit_code == 0
    assert any(t.startswith("commit:") for t in run.tags)
    assert run.config["agent"]["total_env_steps"] == 48 and run.config["action"]["mode"] == "local_linear"
    assert max(h.get("env_step", 0) for h in run.history) == 48
    assert run.summary["eval/success_rate"] == pytest.approx(summary["success_rate"])
    assert any(p.suffix == ".png" for p in (offline / "files" / "media").rglob("*"))


def test_running_the_same_run_again_resumes_from_its_checkpoint(first_run):
    root, run_dir, _ = first_run
    before = metric_rows(run_dir)
    run_job(debug_cfg(root, "agent.total_env_steps=96"), run_dir, train)
    ckpt = torch.load(RunDir(run_dir).checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["sac"]["env_steps"] == 96
    after = metric_rows(run_dir)
    steps = [float(r["env_step"]) for r in after if r.get("env_step")]
    assert len(after) > len(before) and steps[-1] == 96  # appended, not overwritten
    assert [r["env_step"] for r in after[: len(before)]] == [r["env_step"] for r in before]
    assert min(s for s in steps if s > 48) > 48  # the counter continued from 48 rather than restarting
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2  # same W&B run id, resumed
    ids = {read_offline_run(p).run_id for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("identity.hard_bound=0.9", "0 <= hard_bound <= soft_threshold < 1"),
        ("action.mode=diagonal", "action.mode must be one of"),
        ("agent.batch_size=0", "SACConfig.batch_size must be an integer >= 1"),
        ("+agent.batchsize=64", r"agent: unknown key\(s\) \['batchsize'\]"),
        (
            "protocol.targets=[30,120]",
            r"protocol.targets must be ages in the age model's range \[0, 80\], got \[120\]",
        ),
        ("optimized_metric=succes_rate", r"optimized_metric='succes_rate' is not a summary key"),
        ("reward.terms.success.weight=inf", r"reward.terms.success: SuccessBonus.weight must be finite"),
        ("device=gpu", r"device='gpu' is not a device: use auto, cpu, cuda, cuda:<index> or mps"),
        ("threads=0", r"threads must be null \(torch's default\) or an integer >= 1, got 0"),
        ("score_chunk=0", r"score_chunk must be an integer >= 1"),
        (
            "agent.learning_starts=48",
            r"learning_starts must be below total_env_steps=48 \(no update would ever run\)",
        ),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train(debug_cfg(tmp_path, override), tmp_path / "dbg")
    assert not (tmp_path / "dbg").exists()


def test_the_job_guard_records_a_failure_and_clears_it_on_success(tmp_path, model_files):
    run = RunDir(tmp_path / "dbg")
    with pytest.raises(ValueError, match="0 <= hard_bound <= soft_threshold < 1"):
        run_job(debug_cfg(tmp_path, "identity.hard_bound=0.9", "logger=none"), run, train)
    assert "hard_bound" in run.failed.read_text() and not run.checkpoint.exists()
    # the same run fixed: it trains, the stale FAILED.txt goes, the sweeper gets its metric
    value = run_job(debug_cfg(tmp_path, "logger=none", "optimized_metric=age_error"), run, train)
    assert not run.failed.exists() and run.checkpoint.is_file()
    assert value == pytest.approx(json.loads(run.summary.read_text())["age_error"])


def test_a_failing_job_still_finishes_its_wandb_run(tmp_path, model_files):
    def crash(cfg, run):
        import wandb

        wandb.init(project="agelatent", dir=str(run.path), mode="offline", name=run.name)
        raise RuntimeError("boom")

    run = RunDir(tmp_path / "crash")
    run.path.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        run_job(debug_cfg(tmp_path), run, crash)
    (offline,) = (run.path / "wandb").glob("offline-run-*")
    assert read_offline_run(offline, wait_for_exit_s=10).exit_code == 1 and "boom" in run.failed.read_text()


def test_sigterm_checkpoints_and_the_resumed_run_repeats_an_uninterrupted_one(tmp_path, model_files):
    """SIGTERM mid-run: the batched step under way finishes, the checkpoint (episodes in progress and replay
    included) is written, the job exits with 128 + 15 and says how to resume; resuming reproduces the
    uninterrupted run's weights exactly -- also with checkpoints every batched step by the clock."""
    exact = ("logger=none", "agent.checkpoint_replay=true")
    straight = RunDir(tmp_path / "straight")
    run_job(debug_cfg(tmp_path, *exact, "run_name=straight"), straight, train)

    cut = RunDir(tmp_path / "dbg")
    fault = "+callbacks.fault={_target_:agelatent.testing.faults.SignalAt,env_steps:24}"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        run_job(debug_cfg(tmp_path, *exact, fault), cut, train)
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back
    assert torch.load(cut.checkpoint, weights_only=True)["sac"]["env_steps"] == 28  # 24 + the step under way
    assert "interrupted by SIGTERM: stopped at env step 28/48" in cut.failed.read_text()
    assert "run the same command again to resume" in cut.failed.read_text()
    assert not cut.summary.exists()  # a cut run is not evaluated

    CheckpointSteps.SEEN.clear()
    by_clock = ("callbacks.checkpoint.every_n_steps=1000", "callbacks.checkpoint.every_minutes=1e-9")
    probe = "+callbacks.probe={_target_:conftest.CheckpointSteps}"
    run_job(debug_cfg(tmp_path, *exact, *by_clock, probe), cut, train)
    assert list(range(32, 49, 4)) == CheckpointSteps.SEEN  # one write per batched step, by the clock
    assert not cut.failed.exists() and cut.summary.exists()
    mine = torch.load(cut.checkpoint, weights_only=True)
    theirs = torch.load(straight.checkpoint, weights_only=True)
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][key], value), key


def test_a_bad_checkpoint_interval_is_refused_before_any_work(tmp_path):
    with pytest.raises(
        ValueError, match="callbacks.checkpoint.every_minutes must be a number of minutes > 0"
    ):
        train(debug_cfg(tmp_path, "callbacks.checkpoint.every_minutes=0"), tmp_path / "dbg")
    assert not (tmp_path / "dbg").exists()


def test_a_second_job_on_a_run_directory_in_use_is_refused_and_touches_nothing(tmp_path):
    run = RunDir(tmp_path / "dbg")
    in_use = rf"dbg is in use by pid {os.getpid()} on .*another run_name"
    with run.lock(), pytest.raises(RunInUseError, match=in_use):  # as a first agelatent-train holds it
        run_job(debug_cfg(tmp_path, "logger=none"), run, train)
    assert sorted(p.name for p in run.path.iterdir()) == [".lock"]  # no config, FAILED.txt or checkpoint
    with run.lock():  # released: the next job gets it
        pass


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2], ids=["SIGTERM", "SIGINT", "SIGUSR2"]
)
def test_agelatent_train_stopped_by_a_signal_from_outside_exits_with_a_checkpoint(
    tmp_path, model_files, signum
):
    """As `timeout`, SLURM pre-emption (SIGTERM), Ctrl-C (SIGINT) or SLURM's time-limit warning to a submitit
    job (SIGUSR2) would: a real agelatent-train process gets the signal mid-run and exits with 128 + signum,
    no traceback, having written its checkpoint and FAILED.txt (outside SLURM nothing requeues it)."""
    import subprocess
    import sys
    import time

    run = RunDir(tmp_path / "long")
    cmd = [
        sys.executable, "-m", "agelatent.cli.train", "profile=debug", "agent.total_env_steps=100000",
        "logger=none", "device=cpu", "threads=1", f"paths.runs_dir={tmp_path}", "run_name=long",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not run.checkpoint.is_file():  # training has started and written its first checkpoint
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err and f"interrupted by {signum.name}: stopped at env step" in err
    steps = torch.load(run.checkpoint, weights_only=True)["sac"]["env_steps"]
    assert 16 <= steps < 100000 and f"stopped at env step {steps}/100000" in run.failed.read_text()


@pytest.mark.slow
def test_a_newcomers_console_shows_our_lines_not_the_libraries_notices(tmp_path, model_files):
    """`make train`'s console, as a person sees it: the job's own lines and W&B's one-line notice of where the
    offline run is saved; no W&B deprecation warning, no Lightning advertisement or accelerator notices, no
    pytree deprecation warning, no W&B history dump at the end."""
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "agelatent.cli.train", "profile=debug", "device=cpu", "threads=1",
        f"paths.runs_dir={tmp_path}", "run_name=console",
    ]  # fmt: skip
    env = os.environ | {"WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)  # as a user's shell has it
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    assert proc.stdout.lstrip().startswith("agelatent-train console:")
    assert "Run data is saved locally" in console and "validation success" in console
    for noise in ("anonymous", "litlogger", "LeafSpec", "GPU available", "TPU available", "Run history"):
        assert noise not in console, noise
