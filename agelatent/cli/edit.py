"""``agelatent-edit`` (``make edit PHOTO=... TARGETS=...``): age the faces in real photos.

For a photo, or every photo in a folder (``photo=``), and every frontal face found in it
(:mod:`agelatent.photos`):

1. the face cropped the way the generator's training faces were (``alignment``: :mod:`agelatent.photos.faces`),
   at the generator's resolution;
2. its reconstruction: the latent found by inversion through the world (``inversion.*``), written to
   ``<photo>_face<k>_latent.pt`` with its crop; ``latent=<that file>`` (instead of ``photo=``) edits the face
   again -- other targets, other editors -- without detection or inversion;
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
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.progress import Progress

from agelatent.config import CONFIG_DIR
from agelatent.evaluation.comparison import validate_editors
from agelatent.photos import PhotoError, list_photos, load_photo
from agelatent.photos.editing import Face, FaceFinder, edit_face, parse_targets
from agelatent.photos.faces import ALIGNMENTS
from agelatent.photos.invert import InversionSettings
from agelatent.runs import RunDir, run_job
from agelatent.world import build_world, check_run_settings, perception_class

log = logging.getLogger(__name__)


def validate(cfg: DictConfig):
    """Every setting checked before any model loads; returns (MDP, editors, targets, photos, inversion
    settings)."""
    check_run_settings(cfg)
    if bool(cfg.photo) == bool(cfg.get("latent")):
        raise ValueError(
            "photo is null: set photo=<a photo file or a folder of photos> (make edit PHOTO=...)"
            if not cfg.photo
            else "photo and latent are both set: give one (latent= edits a saved face again, photo= finds new ones)"
        )
    if cfg.photo:
        photos = list_photos(cfg.photo)
    else:
        photos = [Path(cfg.latent).expanduser()]
        if not photos[0].is_file():
            raise ValueError(
                f"latent={photos[0]}: no such file (a <photo>_face<k>_latent.pt from agelatent-edit)"
            )
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
    env_cfg, editors = validate_editors(cfg)
    return env_cfg, editors, targets, photos, inversion


def run(cfg: DictConfig, out_dir: RunDir | Path) -> list[dict]:
    """Edit every face of every photo (or the face ``latent=`` saved); returns the CSV's rows."""
    out = out_dir.path if isinstance(out_dir, RunDir) else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mdp, editors, targets, photos, settings = validate(cfg)
    world = build_world(cfg)
    rows: list[dict] = []
    skipped: list[str] = []
    if cfg.get("latent"):  # a saved face, edited again: no detection, no inversion
        face = Face.load(photos[0], world)
        photo = None
        if cfg.paste_back:
            try:
                photo = load_photo(face.photo_path)
            except PhotoError as err:
                raise PhotoError(
                    f"{err}: the photo latent={photos[0]} came from; or set paste_back=false"
                ) from None
        rows = edit_face(world, face, targets, editors, mdp, out, photo=photo, feather=cfg.feather)
    else:
        finder = FaceFinder.for_world(
            world, alignment=cfg.alignment, template=cfg.get("template"), template_faces=cfg.template_faces,
            first_seed=int(cfg.splits.calibration), min_face_px=cfg.min_face_px, min_score=cfg.min_detection_score,
        )  # fmt: skip
        with Progress(transient=True) as bar:
            photos_task = bar.add_task("photos", total=len(photos))

            def inverting(k: int):  # a sub-bar per inversion, gone when it is done
                task = bar.add_task(f"  inverting face {k}", total=settings.steps)

                def advance(step: int) -> None:
                    bar.update(task, completed=step)
                    if step >= settings.steps:
                        bar.remove_task(task)

                return advance

            for photo_path in photos:
                bar.update(photos_task, description=f"photo {photo_path.name}")
                try:
                    photo = load_photo(photo_path)
                    faces = finder.faces(world, photo_path, photo, settings, inverting)
                except PhotoError as err:
                    log.warning("%s", err)
                    skipped.append(str(err))
                    faces = []
                for face in faces:
                    face.save(out / f"{face.stem}_latent.pt", world.latent_space)
                    rows += edit_face(
                        world, face, targets, editors, mdp, out,
                        photo=photo if cfg.paste_back else None, feather=cfg.feather,
                    )  # fmt: skip
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
