"""``agelatent-edit`` (``make edit PHOTO=... TARGETS=...``): age the faces in real photos.

For a photo, or every photo in a folder (``photo=``), and every frontal face found in it
(:mod:`agelatent.photos`):

1. the face aligned the way the generator frames its own faces, at the generator's resolution;
2. its reconstruction: the latent found by inversion through the world (``inversion.*``), written to
   ``<photo>_face<k>_latent.pt`` so it can be edited again;
3. the edit from that latent towards every target (``targets``: ages, or ``+N``/``-N`` years relative to the
   reconstruction's estimated age) by every editor (``editors``; ``sac_policy`` with ``policy=runs/<name>``),
   under the same MDP rules as ``agelatent-eval`` (``run_edits``, identity bound, step limit);
4. ``<photo>_face<k>.png``: aligned face | reconstruction | one edit per target, a row per editor;
   ``edits.csv``: one row per (face, editor, target) with the estimated ages (photo, reconstruction, edit),
   the edit's identity similarity to the photo's face and to the reconstruction, P(male), the world calls
   and the outcome; with ``paste_back=true``, ``<photo>_face<k>_<editor>_<target>.png``: the photo with the
   edited face pasted in (:mod:`agelatent.photos.paste`).

Everything goes to ``results/edit/<run_name>/``. Bad settings fail before any model loads; a photo without a
usable face is reported by name and skipped (the run fails only when no photo had one).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from agelatent.config import CONFIG_DIR
from agelatent.runs import RunDir, run_job

log = logging.getLogger(__name__)

_TARGET = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Target:
    years: float
    relative: bool  # years are added to the reconstruction's age

    @property
    def label(self) -> str:
        return f"{self.years:+g}y" if self.relative else f"{self.years:g}"

    def resolve(self, reconstruction_age: float, age_range: tuple[float, float]) -> float:
        age = reconstruction_age + self.years if self.relative else self.years
        lo, hi = age_range
        if not lo <= age <= hi:
            raise ValueError(
                f"target {self.label} asks for age {age:.1f}, outside the age network's range [{lo:g}, {hi:g}] "
                f"(the reconstruction looks {reconstruction_age:.1f}): choose a target within it"
            )
        return age


def parse_targets(values, age_range: tuple[float, float]) -> list[Target]:
    """``targets`` -> :class:`Target` list: ``"40"`` / ``40`` (an age) or ``"+10"`` / ``"-10"`` / ``-10``
    (years relative to the reconstruction; on Hydra's command line quote a ``+``: ``'targets=["+10",60]'``),
    or one comma-separated string of them. Absolute ages are checked against ``age_range`` here, relative
    ones once the reconstruction's age is known."""
    if isinstance(values, str):  # "+20,-20,70" (what `make edit TARGETS=...` passes)
        values = [v for v in values.split(",") if v.strip()]
    if values is None or isinstance(values, int | float) or len(values) == 0:
        raise ValueError(f"targets must be a non-empty list like ['+20', '-20', 70], got {values!r}")
    out = []
    for value in values:
        match = _TARGET.match(str(value))
        if match is None or isinstance(value, bool):
            raise ValueError(
                f"targets: {value!r} is neither an age (40) nor years relative to the face (+10, -10)"
            )
        sign, number = match.groups()
        years = float(number) * (-1 if sign == "-" else 1)
        relative = sign == "-" or (sign == "+" and isinstance(value, str))  # no age is negative
        target = Target(years, relative)
        if not relative:
            target.resolve(0.0, age_range)
        out.append(target)
    return out


def validate(cfg: DictConfig):
    """Every setting checked before any model loads; returns (MDP, policy checkpoint, targets, photos,
    inversion settings)."""
    from agelatent.evaluation.comparison import validate_editors
    from agelatent.photos import list_photos
    from agelatent.photos.invert import InversionSettings
    from agelatent.world import check_run_settings, perception_class

    check_run_settings(cfg)
    if not cfg.photo:
        raise ValueError(
            "photo is null: set photo=<a photo file or a folder of photos> (make edit PHOTO=...)"
        )
    photos = list_photos(cfg.photo)
    targets = parse_targets(cfg.targets, perception_class(cfg).age_range)
    inversion = InversionSettings(**cfg.inversion)
    if isinstance(cfg.min_face_px, bool) or not isinstance(cfg.min_face_px, int) or cfg.min_face_px < 8:
        raise ValueError(f"min_face_px must be an integer >= 8, got {cfg.min_face_px!r}")
    if (
        isinstance(cfg.template_faces, bool)
        or not isinstance(cfg.template_faces, int)
        or cfg.template_faces < 4
    ):
        raise ValueError(f"template_faces must be an integer >= 4, got {cfg.template_faces!r}")
    from agelatent.photos.faces import ALIGNMENTS

    if cfg.alignment not in ("auto", *ALIGNMENTS):
        raise ValueError(
            f"alignment must be auto or one of {', '.join(ALIGNMENTS)} (agelatent/photos/faces.py), "
            f"got {cfg.alignment!r}"
        )
    template = cfg.get("template")
    if template is not None:
        points = np.asarray(list(template), dtype=object)
        if points.shape != (5, 2) or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in points.flat):
            raise ValueError(
                "template must be null (measure it from the generator's samples) or five [x, y] pairs of "
                f"fractions of the image in [0, 1], in the five-point predictor's order, got {template!r}"
            )
    if not (isinstance(cfg.min_detection_score, int | float) and math.isfinite(cfg.min_detection_score)):
        raise ValueError(f"min_detection_score must be a finite number, got {cfg.min_detection_score!r}")
    if not (isinstance(cfg.feather, int | float) and 0 < cfg.feather <= 1):
        raise ValueError(f"feather must be in (0, 1], got {cfg.feather!r}")
    env_cfg, ckpt = validate_editors(cfg)
    return env_cfg, ckpt, targets, photos, inversion


def _u8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] on 0..255 -> [H, W, 3] uint8."""
    return image.detach().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], scale: int = 2) -> Image.Image:
    """A contact sheet: one row per (label, [(caption, image), ...])."""
    size = rows[0][1][0][1].shape[0] * scale
    pad, label_w, caption_h = 4, 120, 14
    cols = max(len(cells) for _, cells in rows)
    sheet = Image.new("RGB", (label_w + cols * (size + pad), len(rows) * (size + caption_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, cells) in enumerate(rows):
        y = r * (size + caption_h + pad)
        draw.text((4, y + size // 2), label, fill="black")
        for c, (caption, image) in enumerate(cells):
            x = label_w + c * (size + pad)
            sheet.paste(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS), (x, y))
            draw.text((x + 2, y + size + 1), caption, fill="black")
    return sheet


def run(cfg: DictConfig, out_dir: RunDir | Path) -> list[dict]:
    """Edit every face of every photo; returns the CSV's rows."""
    from rich.progress import Progress

    from agelatent.editors import PolicyEditor, run_edits
    from agelatent.env.latent_age import LatentAgeEnv
    from agelatent.env.outcome import Outcome
    from agelatent.env.rewards import Reward
    from agelatent.evaluation.comparison import editor_env_config, make_editor
    from agelatent.perception.align import FivePointLandmarker
    from agelatent.photos import PhotoError, load_photo
    from agelatent.photos.faces import (
        align_face,
        detect_faces,
        generator_template,
        sixty_eight_point_predictor,
    )
    from agelatent.photos.invert import invert
    from agelatent.photos.paste import paste_back
    from agelatent.world import build_world

    out = out_dir.path if isinstance(out_dir, RunDir) else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_cfg, ckpt, targets, photos, settings = validate(cfg)
    world = build_world(cfg)
    perception = world.perception
    resolution = int(world.generator.resolution)
    alignment = cfg.alignment
    if alignment == "auto":
        alignment = getattr(world.generator, "photo_alignment", "template")
    template, predictor68 = None, None
    if alignment == "ffhq":
        predictor68 = sixty_eight_point_predictor()
    elif cfg.get("template") is not None:  # given: fractions of the image -> its pixels (centres at integers)
        template = np.asarray(cfg.template, dtype=np.float64) * resolution - 0.5
    else:
        template = generator_template(world, cfg.template_faces, int(cfg.splits.calibration))
    log.info("alignment: %s", alignment)
    landmarker = FivePointLandmarker(work_size=None, backend="dlib")
    editors = {}
    rows: list[dict] = []
    skipped: list[str] = []
    with Progress(transient=True) as bar:
        photos_task = bar.add_task("photos", total=len(photos))
        for photo_path in photos:
            bar.update(photos_task, description=f"photo {photo_path.name}")
            try:
                photo = load_photo(photo_path)
                faces = detect_faces(
                    photo,
                    landmarker,
                    min_face_px=cfg.min_face_px,
                    min_score=cfg.min_detection_score,
                    name=str(photo_path),
                    predictor68=predictor68,
                )
            except PhotoError as err:
                log.warning("%s", err)
                skipped.append(str(err))
                bar.advance(photos_task)
                continue
            log.info("%s: %d face(s)", photo_path, len(faces))
            for k, face in enumerate(faces):
                aligned = align_face(photo, face, resolution, alignment=alignment, template=template)
                crop = aligned.crop / 127.5 - 1  # the generator's range
                task = bar.add_task(f"  inverting face {k}", total=settings.steps)
                inversion = invert(world, crop, settings, lambda step, t=task: bar.update(t, completed=step))
                bar.remove_task(task)
                stem = f"{photo_path.stem}_face{k}"
                torch.save({
                    "latent": inversion.latent.cpu(), "latent_space": getattr(world.generator, "latent_space", "z"),
                    "photo": str(photo_path), "box": face.box, "alignment": alignment,
                    "crop_to_photo": torch.from_numpy(aligned.crop_to_photo),
                }, out / f"{stem}_latent.pt")  # fmt: skip
                with torch.no_grad():
                    photo_scores = perception(crop[None].to(world.device))
                    recon_scores = perception(inversion.image[None])  # the inversion's own image
                recon_age = float(recon_scores.ages_years[0])
                ages = torch.tensor([t.resolve(recon_age, perception.age_range) for t in targets])
                recon_u8 = _u8((inversion.image + 1) * 127.5)
                sheet_rows = []
                for name in cfg.editors:
                    ecfg = editor_env_config(name, cfg, env_cfg, len(targets))
                    env = LatentAgeEnv(world, ecfg, Reward.zero(), auto_reset=False)
                    if name not in editors:
                        editors[name] = (
                            PolicyEditor.from_checkpoint(ckpt, env) if name == "sac_policy"
                            else make_editor(name, cfg, world, ecfg)
                        )  # fmt: skip
                    starts = inversion.latent[None].expand(len(targets), -1).contiguous()
                    result = run_edits(env, editors[name], starts, ages.to(world.device))
                    final = (result.final_images + 1) * 127.5
                    with torch.no_grad():
                        final_scores = perception(result.final_images)
                    sim_photo = world.identity_similarity(final_scores.identity, photo_scores.identity)
                    sim_recon = world.identity_similarity(final_scores.identity, recon_scores.identity)
                    cells = [("photo", _u8(aligned.crop)), (f"recon {recon_age:.0f}", recon_u8)]
                    for i, target in enumerate(targets):
                        final_age = float(result.ages[-1, i])
                        cells.append((f"{target.label}: {final_age:.0f}", _u8(final[i])))
                        rows.append({
                            "photo": str(photo_path), "face": k, "box": " ".join(map(str, face.box)),
                            "editor": name, "target": target.label, "target_age": round(float(ages[i]), 2),
                            "photo_age": round(float(photo_scores.ages_years[0]), 2),
                            "reconstruction_age": round(recon_age, 2), "final_age": round(final_age, 2),
                            "reconstruction_similarity_to_photo": round(float(world.identity_similarity(
                                recon_scores.identity[0], photo_scores.identity[0])), 4),
                            "similarity_to_photo": round(float(sim_photo[i]), 4),
                            "similarity_to_reconstruction": round(float(sim_recon[i]), 4),
                            "p_male": round(float(final_scores.p_male[i]), 4),
                            "steps": int(result.steps[i]), "outcome": Outcome(int(result.outcome[i])).label,
                            "world_calls": result.world_calls // len(targets),
                            "inversion_loss": round(float(inversion.losses[-1, inversion.best]), 5),
                        })  # fmt: skip
                        if cfg.paste_back:
                            pasted = paste_back(photo, final[i], (inversion.image + 1) * 127.5,
                                                aligned.crop_to_photo, cfg.feather)  # fmt: skip
                            Image.fromarray(pasted).save(out / f"{stem}_{name}_{target.label}.png")
                    sheet_rows.append((name, cells))
                _sheet(sheet_rows).save(out / f"{stem}.png")
            bar.advance(photos_task)
    if not rows:
        raise ValueError("no photo had a usable face: " + " | ".join(skipped))
    with open(out / "edits.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info(
        "wrote %d edits of %d face(s) to %s", len(rows), len({(r["photo"], r["face"]) for r in rows}), out
    )
    return rows


def job(cfg: DictConfig, run_dir: RunDir) -> dict[str, float]:
    rows = run(cfg, run_dir)
    return {
        "edits": float(len(rows)),
        "mean_similarity_to_photo": float(np.mean([r["similarity_to_photo"] for r in rows])),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="edit")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, Path(HydraConfig.get().runtime.output_dir), job)


if __name__ == "__main__":
    main()
