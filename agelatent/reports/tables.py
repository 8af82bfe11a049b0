"""Results tables (Markdown + CSV) and per-edit CSV files, written the same way by every entry point."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TABLE_COLUMNS", "protocol_note", "write_edits_csv", "write_table"]

#: metric key -> column label, in the order the Markdown tables show them
TABLE_COLUMNS = (
    ("success_rate", "success"),
    ("robust_success_rate", "robust success"),
    ("age_error", "age error (y)"),
    ("similarity", "identity sim."),
    ("bound_rate", "bound kept"),
    ("gender_flip_rate", "gender flips"),
    ("typicality", "typicality"),
    ("world_calls_per_edit", "world calls / edit"),
    ("seconds_per_edit", "s / edit"),
)
#: second evaluators' metrics (columns ``<evaluator>/<metric>``) -> label, shown after TABLE_COLUMNS
EVALUATOR_COLUMNS = (
    ("success_rate", "success"),
    ("age_error", "age error"),
    ("direction_agreement", "direction"),
    ("confirmation", "confirmation"),
    ("kept", "age kept"),
    ("pixels_per_year", "pixels / y"),
    ("identity_per_year", "identity / y"),
)


def _evaluator_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    names = dict.fromkeys(k.split("/")[0] for r in rows for k in r if "/" in k)
    return [
        (f"{name}/{metric}", f"{label} ({name})")
        for name in names
        for metric, label in EVALUATOR_COLUMNS
        if any(f"{name}/{metric}" in r for r in rows)
    ]


def protocol_note(protocol, max_steps: int, hard_bound: float | None) -> str:
    """One sentence saying what a table's numbers are: faces, targets, step limit, success rule."""
    bound = f"{hard_bound:g}" if hard_bound is not None else "the run's hard bound"
    return (
        f"{protocol.num_faces} held-out faces (seeds from {protocol.first_seed}) x targets "
        f"{', '.join(f'{float(t):g}' for t in protocol.targets)}; at most {max_steps} steps; success = within "
        f"{protocol.success_window_years:g} years of the target with identity similarity >= {bound}. "
        "Mean [95% bootstrap CI]."
    )


def write_table(
    rows: list[dict[str, Any]],
    stem: Path,
    *,
    title: str,
    key: str | tuple[str, ...] = "editor",
    note: str | None = None,
) -> None:
    """``<stem>.csv`` (every column) and ``<stem>.md`` (mean [95% CI] of the main metrics)."""
    stem = Path(stem)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    shown = [(k, label) for k, label in TABLE_COLUMNS if any(k in r for r in rows)]
    shown += _evaluator_columns(rows)
    lines = [f"# {title}", ""] + ([note, ""] if note else [])
    keys = (key,) if isinstance(key, str) else tuple(key)
    lines.append("| " + " | ".join([*keys] + [label for _, label in shown]) + " |")
    lines.append("|" + " --- |" * (len(shown) + len(keys)))
    for r in rows:
        cells = [str(r.get(k, "")) for k in keys]
        for k, _ in shown:
            if k not in r:
                cells.append("")
            elif f"{k}_low" in r:
                cells.append(f"{r[k]:.2f} [{r[k + '_low']:.2f}, {r[k + '_high']:.2f}]")
            else:
                cells.append(f"{r[k]:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


EDIT_COLUMNS = (
    "editor",
    "seed",
    "target",
    "start_age",
    "final_age",
    "age_error",
    "similarity",
    "outcome",
    "steps",
    "world_calls",
    "final_clean_age",  # the age network's clean reading (= final_age without a robust reading)
    "success",  # 1/0: the protocol's verdict (evaluation.metrics.edit_metrics), not the env's 3-year outcome
    "robust_success",  # 1/0: success, and the robust reading in the window too (= success without one)
)


def write_edits_csv(
    path: Path, results: Sequence, seeds: Sequence[int], hard_bound: float, success_window_years: float
) -> None:
    """One row per edit of every :class:`~agelatent.editors.EditResult` (all over the same seeds x targets).
    ``outcome`` is how the episode ended (the env's termination rule); ``success`` and ``robust_success``
    are the protocol's verdict, judged by :func:`~agelatent.evaluation.metrics.edit_metrics` as the summary's
    rates are: those columns, not ``outcome``, are what paired comparisons read."""
    from agelatent.env.outcome import Outcome
    from agelatent.evaluation.metrics import edit_metrics

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EDIT_COLUMNS)
        for result in results:
            verdict = edit_metrics(result, hard_bound, success_window_years)
            success = verdict["success_rate"]
            robust = verdict.get("robust_success_rate", success)
            for i, seed in enumerate(seeds):
                w.writerow(
                    [
                        result.editor,
                        seed,
                        f"{result.targets[i]:.1f}",
                        f"{result.ages[0, i]:.2f}",
                        f"{result.final_ages[i]:.9g}",  # float32 exactly: outcomes can be judged again
                        f"{(result.final_ages[i] - result.targets[i]).abs():.2f}",
                        f"{result.final_similarity[i]:.9g}",
                        Outcome(int(result.outcome[i])).label,
                        int(result.steps[i]),
                        f"{result.row_world_calls[i]:g}",
                        f"{(result.ages if result.clean_ages is None else result.clean_ages)[-1, i]:.9g}",
                        int(success[i]),
                        int(robust[i]),
                    ]
                )
