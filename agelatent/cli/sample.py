"""``agelatent-sample``: generated faces from seeds -> annotated PNG grid + CSV of their scores."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from agelatent.config import CONFIG_DIR
from agelatent.reports.grids import image_grid
from agelatent.runs import RunDir, run_job
from agelatent.world import build_world

log = logging.getLogger(__name__)


def sample(cfg: DictConfig, out_dir: RunDir | Path) -> dict[str, float]:
    """Write ``samples.png`` and ``scores.csv``; returns the faces' mean age and P(male)."""
    out_dir = out_dir.path if isinstance(out_dir, RunDir) else Path(out_dir)
    if cfg.num_faces < 1 or cfg.columns < 1:
        raise ValueError(
            f"num_faces and columns must be >= 1 (got num_faces={cfg.num_faces}, columns={cfg.columns})"
        )
    world = build_world(cfg)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.num_faces))
    scores = world.score(world.sample_latents(seeds))
    images = scores.images
    ages = scores.ages_years.tolist()
    p_male = scores.p_male.tolist()

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "scores.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "age_years", "p_male", "gender"])
        for seed, age, pm in zip(seeds, ages, p_male, strict=True):
            writer.writerow([seed, f"{age:.2f}", f"{pm:.4f}", "male" if pm >= 0.5 else "female"])

    columns = min(cfg.columns, len(seeds))
    rows = -(-len(seeds) // columns)
    pad = rows * columns - len(seeds)  # blank (white) cells fill the last row
    cells = torch.cat([images, torch.ones(pad, *images.shape[1:], device=images.device)])
    captions = [
        f"#{s} {a:.0f}y\n{'M' if m >= 0.5 else 'F'} {max(m, 1 - m):.2f}"
        for s, a, m in zip(seeds, ages, p_male, strict=True)
    ]
    captions += [""] * pad
    grid = image_grid(
        cells.reshape(rows, columns, *images.shape[1:]),
        [captions[r * columns : (r + 1) * columns] for r in range(rows)],
    )
    png_path = out_dir / "samples.png"
    grid.save(png_path)
    log.info("wrote %s and %s (mean age %.1f years)", png_path, csv_path, sum(ages) / len(ages))
    return {"mean_age": sum(ages) / len(ages), "mean_p_male": sum(p_male) / len(p_male)}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir), sample)


if __name__ == "__main__":
    main()
