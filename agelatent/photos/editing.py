"""Editing the faces of real photos: the targets a user asks for, the faces found and inverted, and each
editor's edit of each face towards each target, written as a contact sheet, CSV rows and pasted photos.

``agelatent-edit`` (:mod:`agelatent.cli.edit`) is the console script over these; this module is usable from a
notebook: find faces with :class:`FaceFinder`, edit them with :func:`edit_face`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agelatent.editors import Editor, run_edits
from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig
from agelatent.env.outcome import Outcome
from agelatent.evaluation.comparison import editor_mdp
from agelatent.photos.faces import (
    FaceDetector,
    align_face,
    detect_faces,
    generator_template,
    sixty_eight_point_predictor,
)
from agelatent.photos.invert import InversionSettings, invert
from agelatent.photos.paste import paste_back
from agelatent.reports.grids import image_grid

__all__ = ["Face", "FaceFinder", "Target", "edit_face", "face_stem", "parse_targets"]

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


@dataclass(frozen=True)
class FaceFinder:
    """How faces are found in a photo and cropped for a world's generator (``alignment``: ``template`` or
    ``ffhq``, :mod:`agelatent.photos.faces`)."""

    alignment: str
    template: np.ndarray | None  # [5, 2] template alignment: the generator's landmarks in its pixels
    predictor68: object | None  # ffhq alignment: dlib's 68-point predictor
    detector: FaceDetector
    min_face_px: int
    min_score: float

    @classmethod
    def for_world(
        cls,
        world,
        *,
        alignment: str,
        template=None,
        template_faces: int,
        first_seed: int,
        min_face_px: int,
        min_score: float,
    ) -> FaceFinder:
        """``alignment='auto'`` takes the generator's ``photo_alignment``; a ``template`` crop is given (five
        ``[x, y]`` fractions of the image) or measured on ``template_faces`` samples from ``first_seed``."""
        resolution = int(world.generator.resolution)
        if alignment == "auto":
            alignment = world.generator.photo_alignment
        points, predictor68 = None, None
        if alignment == "ffhq":
            predictor68 = sixty_eight_point_predictor()
        elif template is not None:  # given: fractions of the image -> its pixels (centres at integers)
            points = np.asarray(template, dtype=np.float64) * resolution - 0.5
        else:
            points = generator_template(world, template_faces, first_seed)
        log.info("alignment: %s", alignment)
        return cls(alignment, points, predictor68, FaceDetector(), min_face_px, min_score)

    def faces(
        self,
        world,
        photo_path: Path,
        photo: np.ndarray,
        settings: InversionSettings,
        progress: Callable[[int], Callable[[int], None]] | None = None,
    ) -> list[Face]:
        """Every usable face of ``photo``, aligned and inverted; ``progress(k)`` gives the step callback of
        face ``k``'s inversion (a progress bar's)."""
        detected = detect_faces(
            photo, self.detector, min_face_px=self.min_face_px, min_score=self.min_score,
            name=str(photo_path), predictor68=self.predictor68,
        )  # fmt: skip
        log.info("%s: %d face(s)", photo_path, len(detected))
        faces = []
        for k, found in enumerate(detected):
            aligned = align_face(
                photo,
                found,
                int(world.generator.resolution),
                alignment=self.alignment,
                template=self.template,
            )
            inversion = invert(world, aligned.crop / 127.5 - 1, settings, progress(k) if progress else None)
            faces.append(Face(
                photo_path, k, found.box, aligned.crop, aligned.crop_to_photo, inversion.latent, inversion.image,
                float(inversion.losses[-1, inversion.best]), self.alignment,
            ))  # fmt: skip
        return faces


def edit_face(
    world,
    face: Face,
    targets: list[Target],
    editors: dict[str, Editor],
    mdp: LatentAgeEnvConfig,
    out: Path,
    *,
    photo: np.ndarray | None = None,
    feather: float = 0.5,
) -> list[dict]:
    """Every editor towards every target from ``face``'s latent under ``mdp``'s rules; writes the face's
    contact sheet (photo crop | reconstruction | an edit per target, a row per editor) and, given its
    ``photo``, the photo with each edit pasted back; returns one CSV row per (editor, target)."""
    perception = world.perception
    crop = face.crop / 127.5 - 1  # the generator's range
    with torch.no_grad():
        photo_scores = perception(crop[None].to(world.device))
        recon_scores = perception(face.image[None])
    recon_age = float(recon_scores.ages_years[0])
    recon_similarity = float(world.identity_similarity(recon_scores.identity[0], photo_scores.identity[0]))
    ages = torch.tensor([t.resolve(recon_age, perception.age_range) for t in targets])
    recon = (face.image + 1) * 127.5
    rows, sheet, captions = [], [], []
    for name, editor in editors.items():
        env = LatentAgeEnv.for_edits(world, editor_mdp(editor, mdp), len(targets))
        starts = face.latent[None].expand(len(targets), -1).contiguous()
        result = run_edits(env, editor, starts, ages.to(world.device))
        final = (result.final_images + 1) * 127.5
        with torch.no_grad():
            final_scores = perception(result.final_images)
        sim_photo = world.identity_similarity(final_scores.identity, photo_scores.identity)
        sim_recon = world.identity_similarity(final_scores.identity, recon_scores.identity)
        sheet.append(torch.cat([crop[None].cpu(), face.image[None].cpu(), result.final_images.cpu()]))
        captions.append(["photo", f"recon {recon_age:.0f}"])
        for i, target in enumerate(targets):
            final_age = float(result.ages[-1, i])
            captions[-1].append(f"{target.label}: {final_age:.0f}")
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
                pasted = paste_back(photo, final[i], recon, face.crop_to_photo, feather)
                Image.fromarray(pasted).save(out / f"{face.stem}_{name}_{target.label}.png")
    image_grid(torch.stack(sheet).float(), captions, row_titles=list(editors)).save(out / f"{face.stem}.png")
    return rows
