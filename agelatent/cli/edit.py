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
    """Every setting checked before any model loads; returns (MDP, editors, targets, photos, inversion
    settings)."""
    from agelatent.evaluation.comparison import validate_editors
    from agelatent.photos import list_photos
    from agelatent.photos.invert import InversionSettings
    from agelatent.world import check_run_settings, perception_class

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
    env_cfg, editors = validate_editors(cfg)
    return env_cfg, editors, targets, photos, inversion


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


def face_stem(photo_path: Path, index: int) -> str:
    """What the outputs of ``photo_path``'s ``index``-th face are named after (``<stem>.png`` is its sheet)."""
    return f"{photo_path.stem}_face{index}"


@dataclass
class Face:
    """A face ready to edit: where it came from, its crop and the latent that reconstructs it."""

    photo_path: Path
    index: int  # k-th face of its photo
    box: tuple[int, int, int, int]
    crop: torch.Tensor  # [3, S, S] on 0..255, as aligned
    crop_to_photo: np.ndarray  # [2, 3]
    latent: torch.Tensor  # [d]
    image: torch.Tensor  # [3, S, S] the latent's image, generator range [-1, 1]
    inversion_loss: float
    alignment: str

    @property
    def stem(self) -> str:
        return face_stem(self.photo_path, self.index)

    def save(self, path: Path, latent_space: str) -> None:
        """The face as ``latent=`` reads it back (tensors and plain values only: ``weights_only`` loads it)."""
        torch.save({
            "latent": self.latent.cpu(), "latent_space": latent_space, "photo": str(self.photo_path),
            "face": self.index, "box": list(self.box), "crop": self.crop.round().clamp(0, 255).to(torch.uint8).cpu(),
            "crop_to_photo": torch.from_numpy(self.crop_to_photo), "inversion_loss": self.inversion_loss,
            "alignment": self.alignment,
        }, path)  # fmt: skip

    @classmethod
    def load(cls, path: Path, world) -> Face:
        """A face saved by an earlier run, checked against ``world`` (same latent space and size)."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        space = world.latent_space
        if saved["latent_space"] != space or saved["latent"].shape != (world.latent_dim,):
            raise ValueError(
                f"latent={path}: a {saved['latent_space']} latent of size {saved['latent'].shape[0]}, but this "
                f"world edits {space} latents of size {world.latent_dim}: use the generator (and "
                "generator.latent_space) of the run that saved it"
            )
        latent = saved["latent"].to(world.device)
        with torch.no_grad():
            image = world.generate(latent[None])[0]
        return cls(
            Path(saved["photo"]), int(saved["face"]), tuple(saved["box"]), saved["crop"].float(),
            saved["crop_to_photo"].numpy(), latent, image, float(saved["inversion_loss"]), saved["alignment"],
        )  # fmt: skip


def _photo_faces(cfg, world, photo_path: Path, photo: np.ndarray, finder, settings, bar) -> list[Face]:
    """Every usable face of ``photo``, aligned and inverted (``finder``: the detector's settings)."""
    from agelatent.photos.faces import align_face, detect_faces
    from agelatent.photos.invert import invert

    detected = detect_faces(
        photo, finder["landmarker"], min_face_px=cfg.min_face_px, min_score=cfg.min_detection_score,
        name=str(photo_path), predictor68=finder["predictor68"],
    )  # fmt: skip
    log.info("%s: %d face(s)", photo_path, len(detected))
    faces = []
    for k, found in enumerate(detected):
        aligned = align_face(
            photo, found, int(world.generator.resolution), alignment=finder["alignment"], template=finder["template"]
        )  # fmt: skip
        task = bar.add_task(f"  inverting face {k}", total=settings.steps)
        inversion = invert(
            world, aligned.crop / 127.5 - 1, settings, lambda step, t=task: bar.update(t, completed=step)
        )
        bar.remove_task(task)
        faces.append(Face(
            photo_path, k, found.box, aligned.crop, aligned.crop_to_photo, inversion.latent, inversion.image,
            float(inversion.losses[-1, inversion.best]), finder["alignment"],
        ))  # fmt: skip
    return faces


def _edit_face(
    cfg, world, face: Face, photo: np.ndarray | None, targets, editors: dict, mdp, out: Path
) -> list[dict]:
    """Every editor towards every target from ``face``'s latent; writes its sheet (and pasted photos)."""
    from agelatent.editors import run_edits
    from agelatent.env.latent_age import LatentAgeEnv
    from agelatent.env.outcome import Outcome
    from agelatent.evaluation.comparison import editor_mdp
    from agelatent.photos.paste import paste_back

    perception = world.perception
    crop = face.crop / 127.5 - 1  # the generator's range
    with torch.no_grad():
        photo_scores = perception(crop[None].to(world.device))
        recon_scores = perception(face.image[None])
    recon_age = float(recon_scores.ages_years[0])
    recon_similarity = float(world.identity_similarity(recon_scores.identity[0], photo_scores.identity[0]))
    ages = torch.tensor([t.resolve(recon_age, perception.age_range) for t in targets])
    recon = (face.image + 1) * 127.5
    rows, sheet_rows = [], []
    for name, editor in editors.items():
        env = LatentAgeEnv.for_edits(world, editor_mdp(editor, mdp), len(targets))
        starts = face.latent[None].expand(len(targets), -1).contiguous()
        result = run_edits(env, editor, starts, ages.to(world.device))
        final = (result.final_images + 1) * 127.5
        with torch.no_grad():
            final_scores = perception(result.final_images)
        sim_photo = world.identity_similarity(final_scores.identity, photo_scores.identity)
        sim_recon = world.identity_similarity(final_scores.identity, recon_scores.identity)
        cells = [("photo", _u8(face.crop)), (f"recon {recon_age:.0f}", _u8(recon))]
        for i, target in enumerate(targets):
            final_age = float(result.ages[-1, i])
            cells.append((f"{target.label}: {final_age:.0f}", _u8(final[i])))
            rows.append({
                "photo": str(face.photo_path), "face": face.index, "box": " ".join(map(str, face.box)),
                "editor": name, "target": target.label, "target_age": round(float(ages[i]), 2),
                "photo_age": round(float(photo_scores.ages_years[0]), 2),
                "reconstruction_age": round(recon_age, 2), "final_age": round(final_age, 2),
                "reconstruction_similarity_to_photo": round(recon_similarity, 4),
                "similarity_to_photo": round(float(sim_photo[i]), 4),
                "similarity_to_reconstruction": round(float(sim_recon[i]), 4),
                "p_male": round(float(final_scores.p_male[i]), 4),
                "steps": int(result.steps[i]), "outcome": Outcome(int(result.outcome[i])).label,
                "world_calls": round(float(result.row_world_calls[i])),
                "inversion_loss": round(face.inversion_loss, 5),
            })  # fmt: skip
            if photo is not None:
                pasted = paste_back(photo, final[i], recon, face.crop_to_photo, cfg.feather)
                Image.fromarray(pasted).save(out / f"{face.stem}_{name}_{target.label}.png")
        sheet_rows.append((name, cells))
    _sheet(sheet_rows).save(out / f"{face.stem}.png")
    return rows


def _finder(cfg, world) -> dict:
    """How faces are found and cropped for ``world``'s generator (``alignment``, module docstring)."""
    from agelatent.perception.align import FivePointLandmarker
    from agelatent.photos.faces import generator_template, sixty_eight_point_predictor

    resolution = int(world.generator.resolution)
    alignment = cfg.alignment
    if alignment == "auto":
        alignment = world.generator.photo_alignment
    template, predictor68 = None, None
    if alignment == "ffhq":
        predictor68 = sixty_eight_point_predictor()
    elif cfg.get("template") is not None:  # given: fractions of the image -> its pixels (centres at integers)
        template = np.asarray(cfg.template, dtype=np.float64) * resolution - 0.5
    else:
        template = generator_template(world, cfg.template_faces, int(cfg.splits.calibration))
    log.info("alignment: %s", alignment)
    landmarker = FivePointLandmarker(work_size=None, backend="dlib")
    return {
        "alignment": alignment,
        "template": template,
        "predictor68": predictor68,
        "landmarker": landmarker,
    }


def run(cfg: DictConfig, out_dir: RunDir | Path) -> list[dict]:
    """Edit every face of every photo (or the face ``latent=`` saved); returns the CSV's rows."""
    from rich.progress import Progress

    from agelatent.photos import PhotoError, load_photo
    from agelatent.world import build_world

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
        rows = _edit_face(cfg, world, face, photo, targets, editors, mdp, out)
    else:
        finder = _finder(cfg, world)
        with Progress(transient=True) as bar:
            photos_task = bar.add_task("photos", total=len(photos))
            for photo_path in photos:
                bar.update(photos_task, description=f"photo {photo_path.name}")
                try:
                    photo = load_photo(photo_path)
                    faces = _photo_faces(cfg, world, photo_path, photo, finder, settings, bar)
                except PhotoError as err:
                    log.warning("%s", err)
                    skipped.append(str(err))
                    faces = []
                for face in faces:
                    face.save(out / f"{face.stem}_latent.pt", world.latent_space)
                    rows += _edit_face(
                        cfg, world, face, photo if cfg.paste_back else None, targets, editors, mdp, out
                    )
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
