"""Rank the jobs of a baseline-tuning sweep: ``make tune EDITOR=<name>`` runs ``agelatent-eval -m
experiment=tune_<name>`` (validation faces, ``conf/experiment/tune_<name>.yaml``) and then this script on
its sweep directory.

Every job of the sweep is one evaluation of one editor under one setting of its knobs. The jobs are ranked
by the sweep's ``optimized_metric`` (an ``<editor>/<metric>`` of the results, higher is better), ties broken
by fewer world calls per edit. Writes ``tuning.md`` / ``tuning.csv`` (every job, best first) and
``best.yaml`` (the winning overrides, to copy into ``conf/editor_settings/default.yaml``) into the
sweep directory. A failed job is listed as ``FAILED`` with its error's first line and never wins.

    python experiments/tuning.py results/tune/local_linear_walk
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from agelatent.reports.tables import write_table
from agelatent.runs import RunDir


def _jobs(sweep: Path) -> list[Path]:
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit() and (p / ".hydra").is_dir()]
    if not jobs:
        raise FileNotFoundError(
            f"{sweep} holds no sweep jobs (<n>/.hydra/): run `make tune EDITOR=<name>` first"
        )
    return sorted(jobs, key=lambda p: int(p.name))


def rank(sweep: Path) -> tuple[str, list[dict[str, Any]]]:
    """(optimized metric, one row per job: ``setting``, its overrides and results), best job first."""
    rows, metrics = [], set()
    for job in _jobs(sweep):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        metrics.add(cfg.optimized_metric)
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        chosen = [o.split("=", 1) for o in overrides if o.startswith("editor_settings.")]
        setting = " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in chosen)
        base = {"setting": setting or "(defaults)", "job": job.name, "overrides": overrides}
        run = RunDir(job)
        results = job / "results.csv"
        if run.failed.is_file() or not results.is_file():
            error = run.failed.read_text().strip().splitlines()[:1] if run.failed.is_file() else []
            error = error[0] if error else "no results.csv"
            rows.append(
                {
                    **base,
                    "setting": f"{base['setting']} (FAILED: {error})",
                    "editor": "FAILED",
                    "error": error,
                }
            )
            continue
        with open(results, newline="") as f:
            by_editor = {r["editor"]: r for r in csv.DictReader(f)}
        editor = cfg.optimized_metric.split("/")[0]
        rows.append({**base, **{k: _number(v) for k, v in by_editor[editor].items()}})
    if len(metrics) != 1 or None in metrics:
        raise ValueError(
            f"{sweep}: the jobs must share one optimized_metric, found {sorted(map(str, metrics))}"
        )
    (metric,) = metrics
    key = metric.split("/", 1)[1]
    ok = [r for r in rows if r["editor"] != "FAILED"]
    ok.sort(key=lambda r: (-r[key], r["world_calls_per_edit"]))
    return metric, ok + [r for r in rows if r["editor"] == "FAILED"]


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def write(sweep: Path) -> dict[str, Any]:
    metric, rows = rank(sweep)
    best = rows[0]
    if best["editor"] == "FAILED":
        raise RuntimeError(f"{sweep}: every job failed; first error: {best['error']}")
    table = [{k: v for k, v in r.items() if k != "overrides"} for r in rows]
    write_table(
        table,
        sweep / "tuning",
        title=f"Tuning {best['editor']} on validation faces (ranked by {metric})",
        key=("setting", "job"),
        note=f"{len(rows)} jobs of `{sweep}`; best first (ties: fewer world calls per edit).",
    )
    chosen = dict(o.split("=", 1) for o in best["overrides"] if o.startswith("editor_settings."))
    (sweep / "best.yaml").write_text(
        yaml.safe_dump({"optimized_metric": metric, "best": chosen}, sort_keys=False)
    )
    return {"metric": metric, "value": best[metric.split("/", 1)[1]], "best": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", type=Path, help="the sweep directory (results/tune/<editor>)")
    args = parser.parse_args()
    out = write(args.sweep)
    print((args.sweep / "tuning.md").read_text())
    print(
        f"best {out['metric']} = {out['value']:.3f}: " + " ".join(f"{k}={v}" for k, v in out["best"].items())
    )


if __name__ == "__main__":
    main()
