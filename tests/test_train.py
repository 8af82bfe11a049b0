"""``agelatent-train`` end to end in its debug profile: run directory, metrics, offline W&B, resume, errors."""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from agelatent.cli.train import CHECKPOINT_NAME, train
from agelatent.jobs import compose_config
from agelatent.reports.wandb_offline import read_offline_run


def debug_cfg(tmp_path, *overrides):
    GlobalHydra.instance().clear()
    cfg = compose_config(
        "train", ["profile=debug", "device=cpu", f"runs_dir={tmp_path}", "run_name=dbg", *overrides]
    )
    return cfg


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, model_files):
    root = tmp_path_factory.mktemp("train")
    run_dir = root / "dbg"
    summary = train(debug_cfg(root), run_dir)
    return root, run_dir, summary


def test_a_debug_run_writes_every_artefact(first_run):
    _, run_dir, summary = first_run
    ckpt = torch.load(run_dir / "checkpoints" / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
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
    text = (run_dir / "summary.md").read_text()
    assert "success rate" in text and "identity similarity" in text
    assert 0 <= summary["success_rate"] <= 1 and summary["edits"] == 4
    assert f"{summary['success_rate']:.3f}" in text


def test_the_offline_wandb_run_holds_config_history_and_summary(first_run):
    _, run_dir, summary = first_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run = read_offline_run(offline)
    assert run.name == "dbg" and run.group == "dbg" and run.exit_code == 0
    assert any(t.startswith("commit:") for t in run.tags)
    assert run.config["agent"]["total_env_steps"] == 48 and run.config["action"]["mode"] == "local_linear"
    assert max(h.get("env_step", 0) for h in run.history) == 48
    assert run.summary["eval/success_rate"] == pytest.approx(summary["success_rate"])
    assert any(p.suffix == ".png" for p in (offline / "files" / "media").rglob("*"))


def test_running_the_same_run_again_resumes_from_its_checkpoint(first_run):
    root, run_dir, _ = first_run
    before = metric_rows(run_dir)
    train(debug_cfg(root, "agent.total_env_steps=96"), run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
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
        (
            "eval.targets=[30,120]",
            r"eval.targets must be ages in the age model's range \[0, 80\], got \[120\]",
        ),
        ("reward.terms.success.weight=inf", r"reward.terms.success: SuccessBonus.weight must be finite"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train(debug_cfg(tmp_path, override), tmp_path / "dbg")
    assert not (tmp_path / "dbg").exists()
