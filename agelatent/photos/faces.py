"""Faces in photos: dlib's detector and five-point predictor, and the crop each generator was trained on.

**Detection.** dlib's HOG frontal face detector (part of dlib-bin; no weights to fetch), run with one
upsampling, keeping boxes scoring at least ``min_score`` (dlib's own cut is 0, which on scikit-image's
astronaut keeps the mission patch on her suit, 0.15, beside her face, 1.16; agelatent-edit's
``min_detection_score`` sits between), then the five-point predictor on every box. Faces whose box is narrower than
``min_face_px`` are refused by name: the generator would be asked to reproduce a face it can barely see.

**The generator's crop.** Faces are aligned the way the generator's own faces are: by the least-squares
similarity (:func:`~agelatent.perception.align.fit_similarity`) that maps a *template* -- the mean five-point
landmarks of the generator's own samples, in its output pixels -- onto the photo's landmarks. The template
is measured, not assumed (:func:`generator_template`): on the world's perception where it has a landmark
recipe for generated faces (the embedded world's fixed-box predictor on the 256 work image), otherwise with
dlib's detector on the samples at their own resolution. For the embedded DCGAN, whose DigiFace-style faces
fill the frame, this is what places a photo's face where the generator puts its faces; for StyleGAN2-FFHQ
it approximates the FFHQ alignment (which uses 68-point eye and mouth landmarks) from the five points.

**Sampling.** The crop is rendered at ``k x k`` samples per output pixel (``k`` = the photo pixels per crop
pixel, rounded up) with bilinear interpolation and averaged, so a large face is downsampled without
aliasing; pixels beyond the photo's border repeat its edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from agelatent.perception.align import FivePointLandmarker, fit_similarity, rescale_landmarks
from agelatent.photos.io import PhotoError

__all__ = ["AlignedFace", "DetectedFace", "align_face", "detect_faces", "generator_template"]


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[int, int, int, int]  # (left, top, right, bottom), inclusive pixels
    score: float  # the detector's confidence
    landmarks: np.ndarray  # [5, 2] (x, y) photo pixels, the five-point predictor's parts


@dataclass(frozen=True)
class AlignedFace:
    crop: torch.Tensor  # [3, S, S] float on 0..255: the face as the generator frames its faces
    crop_to_photo: np.ndarray  # [2, 3] affine: crop pixel (u, v, 1) -> photo pixel (x, y)
    face: DetectedFace


def detect_faces(
    photo: np.ndarray,
    landmarker: FivePointLandmarker,
    *,
    min_face_px: int,
    min_score: float,
    name: str = "photo",
) -> list[DetectedFace]:
    """Every frontal face in ``photo [H, W, 3]`` uint8 with a detector score of at least ``min_score``,
    largest first. Raises :class:`PhotoError` when there is none, or when every face found is smaller than
    ``min_face_px`` (naming their sizes)."""
    found = landmarker.detect_all(photo, 1, min_score)
    if not found:
        raise PhotoError(
            f"{name}: no face found (dlib's frontal face detector; faces must be roughly frontal and at least "
            f"~40 pixels wide). Use a photo with a visible frontal face."
        )
    faces, small = [], []
    for box, score, points in sorted(found, key=lambda f: -f[0].width()):
        if box.width() < min_face_px:
            small.append(box.width())
            continue
        faces.append(DetectedFace((box.left(), box.top(), box.right(), box.bottom()), score, points))
    if not faces:
        raise PhotoError(
            f"{name}: {len(small)} face(s) found, {max(small)} pixels wide at most, below min_face_px="
            f"{min_face_px}: too small to reconstruct. Use a larger photo of the face, or lower min_face_px."
        )
    return faces


def generator_template(world, num_faces: int, first_seed: int) -> np.ndarray:
    """``[5, 2]``: the mean five-point landmarks of ``num_faces`` of the generator's samples (seeds
    ``first_seed ..``), in its output pixels (see the module docstring)."""
    perception = world.perception
    recipe = hasattr(perception, "work_images") and hasattr(perception, "landmarks")
    detector = (
        None if recipe else FivePointLandmarker(work_size=None, value_range=(-1.0, 1.0), backend="dlib")
    )
    found = []
    for start in range(first_seed, first_seed + num_faces, 32):
        z = world.sample_latents(range(start, min(start + 32, first_seed + num_faces)))
        with torch.no_grad():
            images = world.generate(z)
        size = images.shape[-2:]
        if recipe:
            work = perception.work_images(images)
            found.append(rescale_landmarks(perception.landmarks(work), tuple(work.shape[-2:]), tuple(size)))
        else:
            points, ok = detector.detect(images.cpu(), upsample_num_times=0)
            found.append(points[ok])
    points = torch.cat(found)
    if len(points) < max(1, num_faces // 4):
        raise PhotoError(
            f"the generator's crop could not be measured: landmarks found on {len(points)} of its {num_faces} "
            "samples (is it a face generator?)"
        )
    return points.mean(0).numpy()


def align_face(photo: np.ndarray, face: DetectedFace, template: np.ndarray, size: int) -> AlignedFace:
    """The ``size x size`` crop of ``photo`` that puts ``face``'s landmarks on ``template``."""
    a, b = fit_similarity(torch.from_numpy(template), torch.from_numpy(face.landmarks)[None])
    a, b = complex(a[0]), complex(b[0])
    crop_to_photo = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
    k = max(1, math.ceil(abs(a)))  # photo pixels per crop pixel: samples per output pixel and axis
    steps = (torch.arange(size * k, dtype=torch.float64) + 0.5) / k - 0.5  # sub-pixel centres, crop pixels
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    m = torch.from_numpy(crop_to_photo)
    x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    h, w = photo.shape[:2]
    grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], -1)[None].float()
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    crop = F.avg_pool2d(sampled, k)[0] if k > 1 else sampled[0]
    return AlignedFace(crop=crop, crop_to_photo=crop_to_photo, face=face)
