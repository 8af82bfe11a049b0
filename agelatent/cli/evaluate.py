"""``agelatent-eval``: the editors compared under one protocol (:mod:`agelatent.evaluation.comparison`) as
a Hydra job on the *test* faces (``protocol=test``).

Writes ``results.md`` / ``results.csv`` (one row per editor, mean and 95% CI per metric), ``edits.csv``
(one row per edit), ``grid_<editor>.png`` and an offline W&B run (a results table and the grids) into the
job directory (``results/eval/<run_name>/``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from agelatent.config import CONFIG_DIR
from agelatent.evaluation.comparison import evaluate
from agelatent.runs import RunDir, run_job, wandb_settings

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: RunDir | Path) -> list[dict]:
    """Evaluate and report; returns the results table's rows (one per editor)."""
    run_dir = out_dir if isinstance(out_dir, RunDir) else RunDir(out_dir)
    rows = evaluate(cfg, run_dir.path)  # validates the config first; W&B starts only after it
    settings = wandb_settings(cfg, run_dir, job_type="eval")
    if settings is not None:
        log_to_wandb(settings, run_dir.path, rows)
    print((run_dir.path / "results.md").read_text())
    return rows


def job(cfg: DictConfig, run_dir: RunDir) -> dict[str, float]:
    """:func:`run` as a job: ``<editor>/<metric>`` -> value (what a sweeper may optimise)."""
    return {f"{r['editor']}/{k}": v for r in run(cfg, run_dir) for k, v in r.items() if isinstance(v, float)}


def log_to_wandb(settings: dict, out_dir: Path, rows: list[dict]) -> None:
    import wandb

    with wandb.init(**settings) as wb:
        columns = list(rows[0])
        wb.log(
            {
                "results": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows]),
                **{
                    f"grid/{r['editor']}": wandb.Image(str(out_dir / f"grid_{r['editor']}.png")) for r in rows
                },
            }
        )
        wb.summary.update({f"{r['editor']}/success_rate": r["success_rate"] for r in rows})


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir), job)


if __name__ == "__main__":
    main()
