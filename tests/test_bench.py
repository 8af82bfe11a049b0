"""`make bench`'s scripts run end to end in a tiny setting and write the report structure
docs/measurements.md reads. Structure only: speed is what the bench measures, never what a test asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True)


@pytest.mark.slow
def test_the_world_and_identity_benches_write_their_reports(tmp_path, model_files):
    world, identity = tmp_path / "world.json", tmp_path / "identity.json"
    _run(
        "experiments/bench_world.py",
        "--batches",
        "1",
        "3",
        "--seconds",
        "0.01",
        "--threads",
        "1",
        "--json",
        str(world),
    )
    _run("experiments/bench_identity.py", "--batch", "2", "--rounds", "1", "--json", str(identity))
    w = json.loads(world.read_text())
    assert [r["batch"] for r in w["results"]] == [1, 3]
    assert set(w["results"][0]["stages_ms_per_chunk"]) == {
        "generator", "upsample_256", "landmarks", "chips", "age", "gender", "identity",
    }  # fmt: skip
    step = w["env_step"]
    assert step["backward_passes"] == 1 + len(step["keep"]) and step["num_envs"] >= 1
    assert {"step_ms", "score_ms", "score_with_directions_ms", "directions_ms"} <= set(step)
    i = json.loads(identity.read_text())
    assert {"batch", "rounds", "speedup", "speedup_1_thread", "parity_max_l2", "torch_threads"} <= set(i)
    assert i["parity_max_l2"] < 1e-4  # the port still matches dlib-bin
    out = tmp_path / "measurements.md"
    _run("experiments/measurements.py", "--bench", str(tmp_path), "--out", str(out))
    page = out.read_text()
    assert "| 3 |" in page and f"{i['speedup']:.1f}×" in page
    assert "One batched env step of the default MDP" in page
