"""The results-table script end to end, on the debug table profile (a tiny run and a handful of edits):
every table step runs -- training through agelatent-train, every editor on the test faces, the second
evaluators' columns, the figures' grids and learning curves. Numbers from it mean nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from conftest import cpu_config

EDITORS = list(cpu_config("eval").editors)  # what agelatent-eval runs by default: every editor


def tables(tmp_path, what: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "experiments/tables.py", what, "--profile", "debug", "--results", str(tmp_path)]
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_table1_and_figures_run_from_scratch_with_the_independent_models_columns(tmp_path, model_files):
    proc = tables(tmp_path, "table1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "table1"
    with open(out / "table1.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["editor"] for r in rows] == EDITORS
    assert all(int(float(r["edits"])) == 2 * 2 for r in rows)  # 2 test faces x 2 targets each
    md = (out / "table1.md").read_text()
    for column in ("success (realigned)", "direction (agender)", "confirmation (agender)"):
        assert column in md
    assert "Profile `debug`" in md

    proc = tables(tmp_path, "figures")  # reuses the table-1 policy
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = tmp_path / "figures"
    assert {f"edits_{e}.png" for e in EDITORS} <= {p.name for p in figures.iterdir()}
    with open(figures / "learning_curves.csv") as f:
        points = list(csv.DictReader(f))
    assert points and int(points[-1]["env_steps"]) == 48  # the debug run's final checkpoint
    assert {"success_rate", "realigned/success_rate", "agender/confirmation"} <= set(points[0])
    assert (figures / "learning_curves.png").stat().st_size > 0
