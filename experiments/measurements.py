"""Regenerate ``docs/measurements.md``: the one place the project's measured figures live.

    python experiments/measurements.py [--run runs/<name>] [--eval results/eval/<name> ...]
        [--curves results/curves/<name>] [--out docs/measurements.md] [--keep-missing] [--readme README.md]

``--keep-missing``: a section whose artefact is not on this machine (a training run made elsewhere) keeps the
existing page's text, marked as kept, instead of saying "not measured". ``--readme``: also rewrite the
README's block of photo-editing figures and its example contact sheet from the same ``photos.json``.

Every figure is read from an artefact a command wrote (``make bench``, ``make train``, ``agelatent-eval``),
and the page says which command; nothing is typed in by hand. Sections whose artefact is missing say so.
README and the docs point here instead of quoting numbers that go stale.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from agelatent.runs import RunDir, git_commit


def _world(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_Not measured: `{path}` is missing (run `make bench`)._"]
    data = json.loads(path.read_text())
    rows = data["results"]
    stages = list(rows[0]["stages_ms_per_chunk"])
    lines = [
        f"`world.score` on the embedded world (`make bench` → `{path}`; {data['threads']} torch threads, "
        f"{data['runtime']} runtime). Stages in ms per chunk of faces.",
        "",
        "| batch | faces/s | ms / call | "
        + " | ".join(stages)
        + " | call / sum of stages | call / networks | alignment share | peak RSS (MB) |",
        "|" + " --- |" * (7 + len(stages)),
    ]
    for r in rows:
        parts = " | ".join(f"{r['stages_ms_per_chunk'][s]:.1f}" for s in stages)
        lines.append(
            f"| {r['batch']} | {r['faces_per_s']:.1f} | {r['ms_per_call']:.1f} | {parts} | "
            f"{r['call_over_stage_sum']:.2f} | {r['call_over_networks']:.2f} | "
            f"{100 * r['alignment_share']:.0f}% | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "_call / networks_: the whole call over the bare forward passes of the generator and the three face "
        "networks on ready inputs (the floor); _alignment share_: upsampling, landmarks and chips as a share "
        "of the stages; _peak RSS_: the bench process's peak after that batch.",
    ]
    marks = data.get("landmarks_ms_per_chunk")
    if marks:
        lines += [
            "",
            "Landmarks per chunk, by backend (the same landmarks): "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in marks.items())
            + ".",
        ]
    step = data.get("env_step")
    if step:
        lines += [
            "",
            f"One batched env step of the default MDP ({step['num_envs']} episodes, keep {step['keep']}): "
            f"{step['step_ms']:.0f} ms; the bare `world.score` of as many faces {step['score_ms']:.0f} ms, with the "
            f"step's {step['backward_passes']} backward passes {step['score_with_directions_ms']:.0f} ms "
            f"(directions {step['directions_ms']:.0f} ms); step / (score + directions) = "
            f"{step['step_over_score_with_directions']:.2f}.",
        ]
    return lines


def _identity(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_Not measured: `{path}` is missing (run `make bench`)._"]
    d = json.loads(path.read_text())
    return [
        f"Identity port vs dlib-bin on the same chips (`make bench` → `{path}`; batch {d['batch']}, median of "
        f"{d['rounds']} interleaved rounds): **{d['speedup']:.1f}×** with {d['torch_threads']} torch threads, "
        f"{d['speedup_1_thread']:.1f}× with one; largest descriptor difference {d['parity_max_l2']:.1e}.",
    ]


def _sac(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_Not measured: `{path}` is missing (run `make bench`)._"]
    d = json.loads(path.read_text())
    return [
        f"SAC gradient updates/s (`make bench` → `{path}`; batch {d['batch']}, hidden {d['hidden']}, obs "
        f"{d['obs_dim']}, act {d['act_dim']}, {d['threads']} threads, same replay contents, {d['rounds']} "
        f"alternating rounds of {d['updates_per_round']} updates): agelatent {d['ours_updates_per_s']:.1f}, "
        f"stable-baselines3 {d['sb3_updates_per_s']:.1f}: **{d['speedup']:.2f}×**.",
    ]


def _editors(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_Not measured: `{path}` is missing (run `make bench`)._"]
    d = json.loads(path.read_text())
    lines = [
        f"Cost of a successful edit (`make bench` → `{path}`; {d['faces']} validation faces × the protocol's "
        f"targets, {d['threads']} threads):",
        "",
        "| editor | success | world calls / edit | s / edit | world calls / success | s / success |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in d["editors"]:
        calls, secs = r["world_calls_per_success"], r["seconds_per_success"]
        lines.append(
            f"| {r['editor']} | {r['success_rate']:.2f} | {r['world_calls_per_edit']:.1f} | "
            f"{r['seconds_per_edit']:.3f} | {'—' if calls is None else f'{calls:.0f}'} | "
            f"{'—' if secs is None else f'{secs:.2f}'} |"
        )
    return lines


def _photos(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_Not measured: `{path}` is missing (run `make bench`)._"]
    d = json.loads(path.read_text())
    s = d["summary"]
    lines = [
        f"Real photos through `agelatent-edit` (`make bench` → `{path}`; default edit config, {d['threads']} "
        f"threads): {d['faces']} faces reconstructed; identity similarity of reconstruction to photo "
        f"{s['reconstruction_similarity_to_photo']:.2f} (dlib's same-person rule: > 0.40; the inversion "
        "optimises this very similarity, so it flatters the reconstruction: judge it by the contact sheets), "
        f"estimated-age gap "
        f"{s['reconstruction_age_gap']:.1f} years; edits: |age error| {s['edit_age_error']:.1f} years, "
        f"similarity to the photo {s['edit_similarity_to_photo']:.2f}, success {s['edit_success_rate']:.2f}.",
        "",
        "| photo | faces | edits | seconds |",
        "| --- | --- | --- | --- |",
        *(f"| {p['photo']} | {p['faces']} | {p['edits']} | {p['seconds']:.1f} |" for p in d["photos"]),
    ]
    lines += [f"| {r['photo']} | refused: {r['why'][:90]} | | |" for r in d["refused"]]
    return lines


#: issue 11's targets, checked against the bench's own measurements (batch 32, the default world)
TARGETS = {
    "world.score / networks' forward": ("world", "≤", 1.3),
    "env step / (score + directions)": ("env_step", "≤", 1.15),
    "SAC updates/s vs stable-baselines3": ("sac", "≥", 2.0),
    "identity port vs dlib-bin": ("identity", "≥", 20.0),
    "seconds per photo face (inversion + edits), agelatent-edit": ("photos", "≤", 60.0),
}


def _targets(bench: Path) -> list[str]:
    def value(kind: str) -> float | None:
        path = bench / {"world": "world.json", "env_step": "world.json", "sac": "sac.json",
                        "identity": "identity.json", "photos": "photos.json"}[kind]  # fmt: skip
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        if kind == "world":
            at = [r for r in d["results"] if r["batch"] == 32]
            return at[0]["call_over_networks"] if at else None
        if kind == "env_step":
            return d.get("env_step", {}).get("step_over_score_with_directions")
        if kind == "photos":
            return d["seconds_per_face"]
        return d["speedup"]

    def why(kind: str) -> str:
        """The measurements that explain a missed target, from the same files."""
        d = json.loads((bench / {"world": "world.json", "env_step": "world.json", "sac": "sac.json"}.get(
            kind, "world.json")).read_text())  # fmt: skip
        if kind == "world":
            st = next(r for r in d["results"] if r["batch"] == 32)["stages_ms_per_chunk"]
            floor = sum(st[k] for k in ("generator", "age", "gender", "identity"))
            return (f"alignment {st['upsample_256'] + st['landmarks'] + st['chips']:.0f} ms per chunk of 32 "
                    f"(landmarks {st['landmarks']:.0f}, chips {st['chips']:.0f}, upsampling {st['upsample_256']:.0f}) "
                    f"on top of the networks' {floor:.0f} ms")  # fmt: skip
        if kind == "env_step":
            e = d["env_step"]
            return (f"step {e['step_ms']:.0f} ms vs score + directions {e['score_with_directions_ms']:.0f} ms; "
                    "the step also scores the fresh episodes of the rows it auto-resets")  # fmt: skip
        if kind == "sac" and "matmul_share" in d:
            return (f"{100 * d['matmul_share']:.0f}% of our update is matrix multiplies, the same work SB3 does: "
                    f"removing all the rest would give at most {1 / d['matmul_share'] * d['speedup']:.1f}×")  # fmt: skip
        return ""

    if not any(bench.glob("*.json")):  # nothing measured: a placeholder, which --keep-missing can keep
        return [f"_Not measured: no benchmark artefacts in `{bench}` (run `make bench`)._"]
    lines = ["| target | measured | goal | met | why not |", "| --- | --- | --- | --- | --- |"]
    for name, (kind, op, goal) in TARGETS.items():
        v = value(kind)
        ok = v is not None and (v <= goal if op == "≤" else v >= goal)
        met = "—" if v is None else ("yes" if ok else "**no**")
        reason = why(kind) if v is not None and not ok else ""
        lines.append(
            f"| {name} | {'not measured' if v is None else f'{v:.2f}'} | {op} {goal:g} | {met} | {reason} |"
        )
    return lines


def _training(run_path: Path | None) -> list[str]:
    if run_path is None:
        return ["_No training run given (`--run runs/<name>`)._"]
    run = RunDir(run_path)
    if not run.summary.is_file():
        return [f"_Not measured: `{run.summary}` is missing._"]
    s = json.loads(run.summary.read_text())
    cfg = run.load_config()
    faces, targets = cfg.protocol.num_faces, len(cfg.protocol.targets)
    rate = s.get("env_steps_per_s")
    lines = [
        f'`make train ARGS="run_name={run.name}"` (the default config; `{run.path}`): '
        f"{s['env_steps']} env steps in {s['train_minutes']:.1f} min"
        + (f" ({rate:.1f} env steps/s, SAC updates included)" if rate else "")
        + f". Validation faces ({faces} × {targets} targets = {int(s['edits'])} edits, seeds from "
        f"{cfg.protocol.first_seed}):",
        "",
        "| metric | mean [95% CI] |",
        "| --- | --- |",
    ]
    for key in ("success_rate", "age_error", "similarity", "bound_rate", "gender_flip_rate", "steps"):
        lines.append(f"| {key} | {s[key]:.3f} [{s[key + '_low']:.3f}, {s[key + '_high']:.3f}] |")
    return lines


def _evaluation(eval_paths: list[Path]) -> list[str]:
    if not eval_paths:
        return ["_No evaluation given (`--eval results/eval/<name>`)._"]
    lines: list[str] = []
    for eval_path in eval_paths:
        md = eval_path / "results.md"
        if not md.is_file():
            lines += [f"_Not measured: `{md}` is missing._", ""]
            continue
        body = [line for line in md.read_text().splitlines() if not line.startswith("# ")]
        lines += [
            f"### `{eval_path.name}`",
            "",
            f"`agelatent-eval` on the test faces (`{md}`):",
            "",
            *body,
            "",
        ]
    return lines


def _curves(path: Path | None) -> list[str]:
    if path is None:
        return ["_No learning curves given (`--curves results/curves/<name>`)._"]
    table = path / "curves.csv"
    if not table.is_file():
        return [f"_Not measured: `{table}` is missing (run `make curves RUN=runs/<name>`)._"]
    with open(table) as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in ("success_rate", "realigned/success_rate", "agender/direction_agreement",
                        "agender/confirmation") if k in rows[0]]  # fmt: skip
    lines = [
        f"Policy snapshots on the validation faces (`make curves` → `{table}`, `{path / 'curves.png'}`; "
        f"{int(float(rows[0]['edits']))} edits per point):",
        "",
        "| env steps | " + " | ".join(keys) + " |",
        "|" + " --- |" * (len(keys) + 1),
    ]
    for r in rows:
        lines.append(f"| {r['env_steps']} | " + " | ".join(f"{float(r[k]):.2f}" for k in keys) + " |")
    return lines


#: README's block of photo-editing figures, rewritten from ``photos.json`` (between these two lines)
README_PHOTOS = (
    "<!-- measured: photos (experiments/measurements.py --readme) -->",
    "<!-- /measured: photos -->",
)
#: where the README's example contact sheet is copied to, beside the README (the photo bench's first sheet)
EXAMPLE_SHEET = Path("docs/images/edit_example.png")


def _placeholder(lines: list[str]) -> bool:
    """A section that measured nothing (its artefact is missing, or none was given)."""
    return bool(lines) and all(line.startswith(("_Not measured", "_No ")) or not line for line in lines)


def _sections_of(page: Path) -> dict[str, list[str]]:
    """``## Title`` -> its lines, from an existing page (empty when there is none)."""
    if not page.is_file():
        return {}
    sections: dict[str, list[str]] = {}
    title = None
    for line in page.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:]
            sections[title] = []
        elif title is not None:
            sections[title].append(line)
    for lines in sections.values():
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
    return sections


def _readme_photos(bench: Path, readme: Path) -> None:
    """Rewrite README's photo block from ``photos.json``: the figures and the example sheet."""
    if not (bench / "photos.json").is_file():
        print(f"{bench / 'photos.json'} is missing: {readme}'s photo block left as it is")
        return
    data = json.loads((bench / "photos.json").read_text())
    s = data["summary"]
    text = readme.read_text()
    begin, end = README_PHOTOS
    if begin not in text or end not in text:
        raise SystemExit(f"{readme}: no block between {begin!r} and {end!r} to rewrite")
    example = data.get("example_sheet")
    lines = [begin]
    if example and Path(example).is_file():
        copy = readme.parent / EXAMPLE_SHEET
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(Path(example).read_bytes())
        lines += [
            f"![{Path(example).stem}: photo crop, reconstruction, edits]({EXAMPLE_SHEET})",
            "",
        ]
    lines += [
        f"Measured by `make bench` on {data['faces']} real faces ({', '.join(p['photo'] for p in data['photos'])}; "
        f"embedded world, default edit config): the reconstruction's identity similarity to the photo "
        f"{s['reconstruction_similarity_to_photo']:.2f} (dlib's same-person rule: > 0.40; flattering, since the "
        f"inversion optimises it), its estimated age {s['reconstruction_age_gap']:.1f} years off the photo's; "
        f"edits {s['edit_age_error']:.1f} years from their targets on average, similarity to the photo "
        f"{s['edit_similarity_to_photo']:.2f}, success {s['edit_success_rate']:.2f}; "
        f"{data['seconds_per_face']:.0f} s per face (median).",
        end,
    ]
    head, rest = text.split(begin, 1)
    readme.write_text(head + "\n".join(lines) + rest.split(end, 1)[1])
    print(f"rewrote the photo figures in {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--run", type=Path, default=None, help="a training run directory")
    parser.add_argument("--eval", type=Path, nargs="*", default=[], help="agelatent-eval output directories")
    parser.add_argument("--curves", type=Path, default=None, help="a learning-curves output directory")
    parser.add_argument("--out", type=Path, default=Path("docs/measurements.md"))
    parser.add_argument(
        "--keep-missing",
        action="store_true",
        help="a section whose artefact is not on this machine keeps the existing page's text, marked as kept",
    )
    parser.add_argument("--readme", type=Path, default=None, help="also rewrite this README's photo block")
    args = parser.parse_args()
    commit = git_commit()
    sections = {
        "Targets": _targets(args.bench),
        "World throughput": _world(args.bench / "world.json"),
        "Identity port": _identity(args.bench / "identity.json"),
        "SAC updates": _sac(args.bench / "sac.json"),
        "Editors: cost per successful edit": _editors(args.bench / "editors.json"),
        "Real photos": _photos(args.bench / "photos.json"),
        "Default training run": _training(args.run),
        "Editors on the test faces": _evaluation(args.eval),
        "Learning curves": _curves(args.curves),
    }
    if args.keep_missing:
        old = _sections_of(args.out)
        kept_mark = "_(Kept from an earlier version of this page: its artefact is not on the machine that regenerated it.)_"
        for title, lines in sections.items():
            previous = old.get(title, [])
            if _placeholder(lines) and previous and not _placeholder(previous):
                sections[title] = previous if kept_mark in previous else [*previous, "", kept_mark]
    lines = [
        "# Measurements",
        "",
        f"Generated by `python experiments/measurements.py` (commit {commit}, "
        f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}); do not edit by hand. Timings are from the "
        "machine that ran the commands and move with it: compare ratios measured in one run, not absolute "
        "numbers across machines.",
    ]
    for title, body in sections.items():
        lines += ["", f"## {title}", "", *body]
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    if args.readme:
        _readme_photos(args.bench, args.readme)


if __name__ == "__main__":
    main()
