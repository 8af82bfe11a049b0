"""Learning curves: a training run's policy snapshots on the *validation* faces, judged three ways.

Every snapshot a run wrote (``checkpoints/policy_<env steps>.pt``, callback ``policy_snapshots``) and its
final checkpoint are evaluated with :func:`agelatent.evaluation.comparison.evaluate` on the validation
protocol (never the test faces), under the run's own MDP, by the reward's networks and by the second
evaluators (agelatent-eval's defaults). :func:`curves` writes ``curves.csv`` (one row per snapshot)
and ``curves.png``: success under the reward's networks and under the realigned evaluator, and the
independent model's direction agreement and confirmation ratio, against env steps -- so a reader sees
whether more training helps, and whether what it helps is age or the reward's crop. Run by
``make curves RUN=runs/<name>`` (``experiments/learning_curves.py``) and by ``make figures`` for the
table-1 policy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from agelatent.config import compose_config
from agelatent.evaluation.comparison import evaluate
from agelatent.runs import RunDir
from agelatent.store import sha256_of

#: a point's record (``step_<env steps>/point.json``): what was evaluated and its row, so a rerun with the
#: same policy weights (the file's sha256: a retrained run of the same name is evaluated afresh) and overrides
#: (an interrupted ``make curves``, or one started while the run still trains)
#: reuses it instead of evaluating again
POINT_FILE = "point.json"

CURVES = (
    ("success_rate", "success (reward's networks)"),
    ("realigned/success_rate", "success (realigned)"),
    ("agender/direction_agreement", "direction agreement (independent)"),
    ("agender/confirmation", "confirmation ratio (independent)"),
)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [r["env_steps"] for r in rows]
    for key, label in CURVES:
        if all(key in r for r in rows):
            ax.plot(steps, [r[key] for r in rows], marker="o", label=label)
            if all(f"{key}_low" in r for r in rows):
                ax.fill_between(
                    steps, [r[f"{key}_low"] for r in rows], [r[f"{key}_high"] for r in rows], alpha=0.15
                )
    ax.set_xlabel("env steps")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves(run_path: Path, out: Path, overrides: list[str], every: int = 1) -> list[dict]:
    """One row per snapshot of the run at ``run_path`` (``agelatent-eval`` ``overrides`` on top of the
    validation protocol) -- with ``every`` = k, every k-th counted back from the final policy, so the last
    point is always the trained one; writes ``out/curves.csv``, ``out/curves.png`` and each point's
    evaluation under ``out/step_<env steps>/`` (reused by a later call asking the same, ``POINT_FILE``)."""
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"every must be an integer >= 1 (1: every snapshot), got {every!r}")
    run = RunDir(run_path)
    points = run.snapshots()
    if run.checkpoint.is_file():
        summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
        final_steps = int(summary.get("env_steps", points[-1][0] + 1 if points else 0))
        if not points or final_steps > points[-1][0]:
            points.append((final_steps, run.checkpoint))
    if not points:
        raise FileNotFoundError(
            f"{run.path}: no policy snapshots or checkpoint (train it with agelatent-train)"
        )
    points = points[::-1][::every][::-1]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for steps, path in points:
        point = out / f"step_{steps:08d}"
        asked = {"policy_sha256": sha256_of(Path(path)), "overrides": list(overrides)}
        done = point / POINT_FILE
        record = json.loads(done.read_text()) if done.is_file() else {}
        if record.get("asked") == asked:
            row = record["row"]  # evaluated before: the same policy weights and overrides
        else:
            cfg = compose_config(
                "eval",
                ["protocol=validation", "editors=[sac_policy]", f"policy={path}", "logger=none", *overrides],
            )
            (row,) = evaluate(cfg, point)
            done.write_text(json.dumps({"asked": asked, "row": row}, indent=1, default=float))
        rows.append({"env_steps": steps, **{k: v for k, v in row.items() if k != "editor"}})
        print(f"{steps:>8} env steps: " + ", ".join(f"{k} {row[k]:.2f}" for k, _ in CURVES if k in row))
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "curves.png", f"{run.name}: validation faces ({int(rows[0]['edits'])} edits per point)")
    return rows
