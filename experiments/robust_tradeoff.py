"""Success against realness as the robust age reading grows stronger: the trade-off curve.

For each setting of ``perception.robust_age`` (none, then pixel noise, blur and down-sampling of growing
strength), the editors run on the *validation* faces with that reading everywhere it matters -- the walk's
direction, the env's termination (success needs the robust and the clean reading within the window) and
the metric -- and the realness judge reads what they did. One ``agelatent-eval`` per setting, under
``<out>/<label>/``; the table collects them.

    python experiments/robust_tradeoff.py [--out results/robust_tradeoff] [--editors local_linear_walk ...]
        [--settings "blur 0.75" ...] [--calibrated results/robust_age/robust_age.json] [overrides ...]

``--calibrated``: each reading put on the clean reading's scale with the line experiments/robust_age.py
fitted on unedited faces (so that at the start of an edit both readings agree on average).

``age kept`` is the realness judge's smallest fraction over the transforms of kinds the reading does not
use (a walk steered by a blurred reading gets no credit for surviving blur). Test faces are never read here.
Writes ``tradeoff.md`` and ``tradeoff.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

#: label -> (kind, strength, draws); None: the clean reading. Weakest first within a kind.
SETTINGS: dict[str, tuple[str, float, int] | None] = {
    "none": None,
    "noise 0.03": ("noise", 0.03, 4),
    "noise 0.05": ("noise", 0.05, 4),
    "noise 0.08": ("noise", 0.08, 4),
    "noise 0.12": ("noise", 0.12, 4),
    "blur 0.5": ("blur", 0.5, 1),
    "blur 0.75": ("blur", 0.75, 1),
    "blur 1": ("blur", 1.0, 1),
    "resample 1.5": ("resample", 1.5, 1),
    "resample 2": ("resample", 2.0, 1),
}
COLUMNS = (
    ("success_rate", "success"),
    ("robust_success_rate", "robust success"),
    ("realness/kept", "age kept"),
    ("realness/pixels_per_year", "pixels / y"),
    ("similarity", "identity sim."),
)


def override(setting: tuple[str, float, int] | None, line: dict | None = None) -> str:
    """``perception.robust_age=...`` for a setting; ``line``: its intercept and slope on the clean reading."""
    if setting is None:
        return "perception.robust_age=null"
    kind, strength, draws = setting
    scale = f",intercept:{line['intercept']:.4f},slope:{line['slope']:.4f}" if line else ""
    return (
        f"perception.robust_age={{transforms:{{{kind}:{{kind:{kind},strength:{strength}}}}},draws:{draws},"
        f"seed:0{scale}}}"
    )


def fitted_lines(path: Path) -> dict[tuple[str, float], dict]:
    """(kind, strength) -> the line of each candidate reading on the clean one, from experiments/robust_age.py."""
    rows = json.loads(path.read_text())["rows"]
    return {(r["kind"], float(r["strength"])): r for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/robust_tradeoff"))
    parser.add_argument("--editors", nargs="+", default=["local_linear_walk", "semantic_walk"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--calibrated",
        type=Path,
        default=None,
        help="robust_age.json of experiments/robust_age.py: put each reading on the clean reading's scale",
    )
    parser.add_argument("overrides", nargs="*", help="more agelatent-eval overrides (e.g. device=cpu)")
    args = parser.parse_args()
    fitted = fitted_lines(args.calibrated) if args.calibrated else {}
    rows = []
    for label in args.settings:
        setting = SETTINGS[label]
        line = fitted.get(setting[:2]) if setting and fitted else None
        if fitted and setting and line is None:
            raise SystemExit(
                f"{args.calibrated} has no line for {label}: run experiments/robust_age.py with it"
            )
        label = f"{label} (on the clean scale)" if line else label
        name = label.replace(" ", "_").replace("(", "").replace(")", "")
        cmd = [
            sys.executable, "-m", "agelatent.cli.evaluate", "protocol=validation", "evaluator=realness",
            "logger=none", f"editors=[{','.join(args.editors)}]", override(setting, line),
            f"job_dir={args.out}", f"run_name={name}", *args.overrides,
        ]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, env=os.environ | {"HYDRA_FULL_ERROR": "1"}).returncode:
            print(f"{label}: failed (see {args.out / name})")
            continue
        with open(args.out / name / "results.csv") as f:
            rows += [{"reading": label, **r} for r in csv.DictReader(f)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out / "tradeoff.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Success against realness as the robust age reading grows (validation faces)",
        "",
        "| reading | editor | " + " | ".join(label for _, label in COLUMNS) + " |",
        "| --- | --- |" + " --- |" * len(COLUMNS),
    ]
    for r in rows:
        cells = []
        for k, _ in COLUMNS:
            if r.get(k) in (None, ""):
                cells.append("")
            elif r.get(f"{k}_low") not in (None, ""):
                cells.append(f"{float(r[k]):.2f} [{float(r[k + '_low']):.2f}, {float(r[k + '_high']):.2f}]")
            else:
                cells.append(f"{float(r[k]):.2f}")
        lines.append(f"| {r['reading']} | {r['editor']} | " + " | ".join(cells) + " |")
    (args.out / "tradeoff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
