"""``agelatent-eval``: the evaluation protocol (see :mod:`agelatent.evaluation.protocol`) as a Hydra job.

Writes ``results.md`` / ``results.csv`` (one row per editor, mean and 95% CI per metric), ``edits.csv``
(one row per edit), ``grid_<editor>.png`` and an offline W&B run (a results table and the grids) into
``out_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agelatent.evaluation.protocol import evaluate
from agelatent.jobs import CONFIG_DIR, git_commit

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path) -> list[dict]:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    rows = evaluate(cfg, out_dir)
    if cfg.wandb.mode != "disabled":
        log_to_wandb(cfg, out_dir, rows)
    print((out_dir / "results.md").read_text())
    return rows


def log_to_wandb(cfg: DictConfig, out_dir: Path, rows: list[dict]) -> None:
    import wandb

    with wandb.init(
        project=cfg.wandb.project,
        group=cfg.wandb.group,
        name=out_dir.name,
        dir=str(out_dir),
        mode=cfg.wandb.mode,
        tags=[f"commit:{git_commit()}", *cfg.wandb.tags],
        config=OmegaConf.to_container(cfg, resolve=True),
        job_type="eval",
    ) as wb:
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
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
