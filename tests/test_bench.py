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
def test_the_benches_write_their_reports(tmp_path, model_files):
    _run("-m", "agelatent.cli.bench", "--quick", "--out", str(tmp_path))  # every bench, tiny settings
    world, identity, sac, editors = (tmp_path / f"{n}.json" for n in ("world", "identity", "sac", "editors"))
    w = json.loads(world.read_text())
    assert [r["batch"] for r in w["results"]] == [1, 3]
    assert set(w["results"][0]["stages_ms_per_chunk"]) == {
        "generator", "upsample_256", "landmarks", "chips", "age", "gender", "identity",
    }  # fmt: skip
    assert {"networks_ms_per_call", "call_over_networks", "alignment_share", "peak_rss_mb"} <= set(
        w["results"][1]
    )
    assert 0 < w["results"][1]["alignment_share"] < 1 and w["results"][1]["peak_rss_mb"] > 0
    assert set(w["landmarks_ms_per_chunk"]) == {"dlib", "torch"}
    step = w["env_step"]
    assert step["backward_passes"] == 1 + len(step["keep"]) and step["num_envs"] >= 1
    assert {"step_ms", "score_ms", "score_with_directions_ms", "directions_ms"} <= set(step)
    i = json.loads(identity.read_text())
    assert {"batch", "rounds", "speedup", "speedup_1_thread", "parity_max_l2", "torch_threads"} <= set(i)
    assert i["parity_max_l2"] < 1e-4  # the port still matches dlib-bin
    s = json.loads(sac.read_text())
    assert s["rounds"] == 2 and s["ours_updates_per_s"] > 0 and s["sb3_updates_per_s"] > 0
    assert (s["obs_dim"], s["act_dim"], s["batch"], s["hidden"]) == (6, 2, 16, [8, 8])
    e = json.loads(editors.read_text())
    assert [r["editor"] for r in e["editors"]] == ["random_walk", "local_linear_walk"]
    for r in e["editors"]:
        assert r["edits"] == 5 and r["world_calls_per_edit"] > 0  # one face x the protocol's five targets
        assert (r["world_calls_per_success"] is None) == (r["success_rate"] == 0)
    ph = json.loads((tmp_path / "photos.json").read_text())
    assert [p["photo"] for p in ph["photos"]] == ["astronaut.png"] and ph["faces"] == 1
    assert len(ph["edit_age_error"]) == ph["photos"][0]["edits"] and ph["seconds_per_face"] > 0
    out = tmp_path / "report.md"  # written by agelatent-bench
    page = out.read_text()
    assert "| 3 |" in page and f"{i['speedup']:.1f}×" in page
    assert "One batched env step of the default MDP" in page
    assert f"**{s['speedup']:.2f}×**" in page and "| local_linear_walk |" in page
    assert f"| SAC updates/s vs stable-baselines3 | {s['speedup']:.2f} | ≥ 2 |" in page
    assert 0 < s["matmul_share"] < 1
    assert "| world.score / networks' forward | not measured |" in page  # measured at batch 32 only
    assert "| astronaut.png | 1 |" in page
    assert Path(ph["example_sheet"]).is_file()  # the photo's contact sheet, kept for the README

    # README's photo block is rewritten from photos.json, and --keep-missing keeps what is not measured here
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- measured: photos (experiments/measurements.py --readme) -->\nstale\n"
                      "<!-- /measured: photos -->\nrest\n")  # fmt: skip
    kept = tmp_path / "kept.md"
    kept.write_text("# Measurements\n\n## Default training run\n\n50016 env steps, from an earlier run.\n")
    _run("experiments/measurements.py", "--bench", str(tmp_path), "--out", str(kept), "--keep-missing",
         "--readme", str(readme))  # fmt: skip
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "stale" not in text
    assert f"{ph['summary']['reconstruction_similarity_to_photo']:.2f}" in text and "edit_example.png" in text
    page = kept.read_text()
    assert "50016 env steps, from an earlier run.\n\n_(Kept from an earlier version" in page
    assert "| astronaut.png | 1 |" in page  # measured here: regenerated


def test_a_page_regenerated_without_benchmarks_keeps_its_targets_table(tmp_path):
    """With no bench artefacts here, --keep-missing keeps the page's targets table instead of blanking it."""
    page = tmp_path / "measurements.md"
    row = "| identity port vs dlib-bin | 36.18 | ≥ 20 | yes |  |"
    page.write_text(f"# Measurements\n\n## Targets\n\n| target | measured | goal | met | why not |\n{row}\n")
    empty = tmp_path / "bench"
    empty.mkdir()
    _run("experiments/measurements.py", "--bench", str(empty), "--out", str(page), "--keep-missing")
    targets = page.read_text().split("## Targets\n", 1)[1].split("\n## ", 1)[0]
    assert row in targets and "_(Kept from an earlier version" in targets
    _run("experiments/measurements.py", "--bench", str(empty), "--out", str(page))  # without: says so
    assert "_Not measured: no benchmark artefacts in" in page.read_text()
