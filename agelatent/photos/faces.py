"""Faces in photos: dlib's detector and landmark predictors, and the crop each generator was trained on.

**Detection.** dlib's HOG frontal face detector (part of dlib-bin; no weights to fetch), run with one
upsampling, keeping boxes scoring at least ``min_score`` (dlib's own cut is 0, which on scikit-image's
astronaut keeps the mission patch on her suit, 0.15, beside her face, 1.16; agelatent-edit's
``min_detection_score`` sits between), then the five-point predictor on every box (and, for the FFHQ
alignment, the 68-point one). Faces whose box is narrower than ``min_face_px`` are refused by name: the
generator would be asked to reproduce a face it can barely see.

Two alignments (:data:`ALIGNMENTS`; ``agelatent-edit alignment=``):

**template** -- the generator's own crop, measured. Faces are aligned the way the generator's own faces
are: by the least-squares similarity (:func:`~agelatent.geometry.fit_similarity`) that maps a
*template* -- the mean five-point landmarks of the generator's own samples, in its output pixels -- onto
the photo's landmarks. The template is measured, not assumed (:func:`generator_template`): on the world's
perception where it has a landmark recipe for generated faces (the embedded world's fixed-box predictor on
the 256 work image), otherwise with dlib's detector on the samples at their own resolution. For the
embedded DCGAN, whose DigiFace-style faces fill the frame, this is what places a photo's face where the
generator puts its faces.

**ffhq** -- the crop FFHQ's images were made with (NVIDIA's ffhq-dataset recipe), which is what a
StyleGAN2-FFHQ checkpoint was trained on. From dlib's 68 landmarks (:func:`ffhq_quad`): the eye centres
(means of points 36-41 and 42-47), the mouth corners (48, 54); with ``e`` = eye-to-eye vector and ``m`` =
the vector from the eyes' midpoint to the mouth's, the crop's x axis is ``e - rot90(m)``, normalised and
scaled to ``max(2 |e|, 1.8 |m|)``; its y axis is x turned by 90 degrees; its centre is the eyes' midpoint
plus ``0.1 m``. The crop spans centre -/+ x -/+ y. Where that square leaves the photo, the recipe's
padding is reproduced (:func:`ffhq_padded`): the photo (cropped to the square's bounding box plus a border
of 10% of its side) is mirrored outwards by at least 30% of the side on every edge; the mirrored band is
blurred (a Gaussian of 2% of the side, blended in from a third of the band's width inside the photo) and
fades to the photo's median colour towards its outer edge. Not reproduced: the recipe's 2x shrinking of very large photos before cropping
(the sampling below already averages them down) and its resampling (bilinear at 4x the output size, then
a Lanczos resize; here k x k bilinear samples per pixel, averaged).

**Sampling.** The crop is rendered at ``k x k`` samples per output pixel (``k`` = the photo pixels per crop
pixel, rounded up) with bilinear interpolation and averaged, so a large face is downsampled without
aliasing; pixels beyond the (padded) photo's border repeat its edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dlib
import numpy as np
import torch
import torch.nn.functional as F

from agelatent.geometry import similarity_matrix, warp_affine
from agelatent.perception.align import FivePointLandmarker, load_shape_predictor, shape_points
from agelatent.photos.io import PhotoError

__all__ = [
    "ALIGNMENTS",
    "AlignedFace",
    "DetectedFace",
    "align_face",
    "detect_faces",
    "ffhq_padded",
    "ffhq_quad",
    "generator_template",
    "sixty_eight_point_predictor",
]

#: ``template``: the generator's own crop, measured from its samples; ``ffhq``: FFHQ's crop (68 landmarks)
ALIGNMENTS = ("template", "ffhq")


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[int, int, int, int]  # (left, top, right, bottom), inclusive pixels
    score: float  # the detector's confidence
    landmarks: np.ndarray  # [5, 2] (x, y) photo pixels, the five-point predictor's parts
    landmarks68: np.ndarray | None = None  # [68, 2] the 68-point predictor's parts, where it was run


@dataclass(frozen=True)
class AlignedFace:
    crop: torch.Tensor  # [3, S, S] float on 0..255: the face as the generator frames its faces
    crop_to_photo: np.ndarray  # [2, 3] affine: crop pixel (u, v, 1) -> photo pixel (x, y)
    face: DetectedFace


def sixty_eight_point_predictor(path=None) -> dlib.shape_predictor:
    """dlib's 68-point face landmark predictor (the pinned ``shape_predictor_68`` file unless ``path``)."""
    return load_shape_predictor("shape_predictor_68", 68, path)[1]


class FaceDetector:
    """Faces in real photos: dlib's HOG frontal face detector, then ``landmarker``'s five-point predictor on
    each box (default: dlib-bin's on the photo as given, ``work_size=None``)."""

    def __init__(self, landmarker: FivePointLandmarker | None = None) -> None:
        self.landmarker = landmarker or FivePointLandmarker(work_size=None, backend="dlib")
        self._hog = dlib.get_frontal_face_detector()

    def detect_all(
        self, image: np.ndarray, upsample_num_times: int = 1, min_score: float = 0.0
    ) -> list[tuple[dlib.rectangle, float, np.ndarray]]:
        """Every face the detector finds in one ``[H, W, 3]`` uint8 image with a score of at least
        ``min_score`` (dlib's own cut is 0), as (box, score, landmarks ``[5, 2]`` in its pixels)."""
        boxes, scores, _ = self._hog.run(image, upsample_num_times, float(min_score))
        return [
            (box, float(score), self.landmarker.predict(image, box))
            for box, score in zip(boxes, scores, strict=True)
        ]

    def detect(self, images, upsample_num_times: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The highest-scoring face of each image of a batch (the landmarker's image formats): (landmarks
        ``[B, 5, 2]`` float64, NaN where no face was found; found ``[B]`` bool)."""
        work, given = self.landmarker.to_work_uint8(images)
        points = np.full((len(work), 5, 2), np.nan)
        found = np.zeros(len(work), dtype=bool)
        for i, img in enumerate(work):
            faces = self.detect_all(img, upsample_num_times)
            if faces:
                points[i] = max(faces, key=lambda f: f[1])[2]
                found[i] = True
        return self.landmarker.to_given(points, given, work.shape[1:3]), torch.from_numpy(found)


def detect_faces(
    photo: np.ndarray,
    detector: FaceDetector,
    *,
    min_face_px: int,
    min_score: float,
    name: str = "photo",
    predictor68: dlib.shape_predictor | None = None,
) -> list[DetectedFace]:
    """Every frontal face in ``photo [H, W, 3]`` uint8 with a detector score of at least ``min_score``,
    largest first, with its five landmarks (and its 68, given ``predictor68``). Raises :class:`PhotoError`
    when there is none, or when every face found is smaller than ``min_face_px`` (naming their sizes)."""
    found = detector.detect_all(photo, 1, min_score)
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
        points68 = None
        if predictor68 is not None:
            points68 = shape_points(predictor68, photo, box)
        faces.append(
            DetectedFace((box.left(), box.top(), box.right(), box.bottom()), score, points, points68)
        )
    if not faces:
        raise PhotoError(
            f"{name}: {len(small)} face(s) found, {max(small)} pixels wide at most, below min_face_px="
            f"{min_face_px}: too small to reconstruct. Use a larger photo of the face, or lower min_face_px."
        )
    return faces


def generator_template(world, num_faces: int, first_seed: int) -> np.ndarray:
    """``[5, 2]``: the mean five-point landmarks of ``num_faces`` of the generator's samples (seeds
    ``first_seed ..``), in its output pixels (see the module docstring)."""
    detector = None  # for a perception that does not locate faces itself (five_point_landmarks is None)
    found = []
    for start in range(first_seed, first_seed + num_faces, 32):
        z = world.sample_latents(range(start, min(start + 32, first_seed + num_faces)))
        with torch.no_grad():
            images = world.generate(z)
        points = world.perception.five_point_landmarks(images)
        if points is not None:
            found.append(points)
            continue
        detector = detector or FaceDetector(
            FivePointLandmarker(work_size=None, value_range=(-1.0, 1.0), backend="dlib")
        )
        points, ok = detector.detect(images.cpu(), upsample_num_times=0)
        found.append(points[ok])
    points = torch.cat(found)
    if len(points) < max(1, num_faces // 4):
        raise PhotoError(
            f"the generator's crop could not be measured: landmarks found on {len(points)} of its {num_faces} "
            "samples (is it a face generator?)"
        )
    return points.mean(0).numpy()


def ffhq_quad(landmarks68: np.ndarray) -> np.ndarray:
    """``[68, 2]`` dlib landmarks -> ``[4, 2]`` corners of FFHQ's crop in photo pixels: top-left,
    bottom-left, bottom-right, top-right of the aligned image (the module docstring gives the recipe)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"FFHQ alignment needs the 68-point landmarks [68, 2], got {lm.shape}")
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)  # the subject's right eye, then left
    eyes = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eyes
    x = eye_to_eye - eye_to_mouth[::-1] * np.array([-1.0, 1.0])
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = x[::-1] * np.array([-1.0, 1.0])
    c = eyes + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _quad_affine(quad: np.ndarray, size: int) -> np.ndarray:
    """The ``[2, 3]`` map crop pixel (u, v, 1) -> photo pixel that spreads ``size`` pixels over ``quad``
    (pixel u covers [u, u + 1] of the square's side, so its centre sits at (u + 0.5) / size of it)."""
    top_left, bottom_left, _, top_right = quad
    ex, ey = (top_right - top_left) / size, (bottom_left - top_left) / size
    offset = top_left + 0.5 * (ex + ey)
    return np.array([[ex[0], ey[0], offset[0]], [ex[1], ey[1], offset[1]]])


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[C, H, W]`` separable Gaussian (radius 4 sigma, edge pixels repeated)."""
    radius = max(1, math.ceil(4 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    x = image[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
    return x[:, 0]


def ffhq_padded(photo: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``photo [H, W, 3]`` that FFHQ's crop ``quad`` reads, padded the way the recipe pads
    (module docstring): returns (image ``[h, w, 3]`` float32 on 0..255, ``(dx, dy)`` -- photo pixel (x, y)
    is image pixel (x - dx, y - dy))."""
    side = np.hypot(*(quad[3] - quad[0]))
    border = max(int(np.rint(side * 0.1)), 3)
    h, w = photo.shape[:2]
    left, top = int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min()))
    right, bottom = int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max()))
    x0, y0 = max(left - border, 0), max(top - border, 0)
    x1, y1 = min(right + border, w), min(bottom + border, h)
    image = photo[y0:y1, x0:x1].astype(np.float32)
    pad = np.array([left - x0, top - y0, x1 - right, y1 - bottom])  # what the crop already has beyond quad
    pad = np.maximum(border - pad, 0)  # (left, top, right, bottom) still missing
    if pad.max() <= border - 4:
        return image, np.array([x0, y0], dtype=np.float64)
    pad = np.maximum(pad, int(np.rint(side * 0.3)))
    image = np.pad(image, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    ph, pw = image.shape[:2]
    ys, xs = np.arange(ph, dtype=np.float32)[:, None], np.arange(pw, dtype=np.float32)[None, :]
    into_x = 1 - np.minimum(xs / pad[0], (pw - 1 - xs) / pad[2])
    into_y = 1 - np.minimum(ys / pad[1], (ph - 1 - ys) / pad[3])
    band = np.maximum(into_x, into_y)[..., None]  # 0 at the photo's edge, 1 at the band's outer edge
    blurred = _gaussian_blur(torch.from_numpy(image).permute(2, 0, 1), side * 0.02).permute(1, 2, 0).numpy()
    image = image + (blurred - image) * np.clip(band * 3 + 1, 0, 1)
    image = image + (np.median(image, axis=(0, 1)) - image) * np.clip(band, 0, 1)
    return image, np.array([x0 - pad[0], y0 - pad[1]], dtype=np.float64)


def align_face(
    photo: np.ndarray,
    face: DetectedFace,
    size: int,
    *,
    alignment: str = "template",
    template: np.ndarray | None = None,
) -> AlignedFace:
    """The ``size x size`` crop of ``photo`` for ``face``: ``alignment="template"`` puts its five landmarks
    on ``template`` (``[5, 2]`` crop pixels), ``"ffhq"`` cuts FFHQ's crop from its 68 landmarks."""
    if alignment == "template":
        if template is None:
            raise ValueError("the template alignment needs a template ([5, 2] landmark positions)")
        crop_to_photo = similarity_matrix(template, face.landmarks)
        source, offset = photo, np.zeros(2)
    elif alignment == "ffhq":
        if face.landmarks68 is None:
            raise ValueError(
                "the ffhq alignment needs the face's 68 landmarks (detect_faces(predictor68=...))"
            )
        quad = ffhq_quad(face.landmarks68)
        crop_to_photo = _quad_affine(quad, size)
        source, offset = ffhq_padded(photo, quad)
    else:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    step = float(np.hypot(*crop_to_photo[:, 0]))  # photo pixels per crop pixel
    k = max(1, math.ceil(step))  # samples per output pixel and axis, averaged
    sub = 0.5 / k - 0.5  # sub-pixel (i, j) of the k-times finer grid sits at crop pixel (i, j) / k + sub
    fine_to_crop = np.array([[1 / k, 0.0, sub], [0.0, 1 / k, sub], [0.0, 0.0, 1.0]])
    fine_to_source = crop_to_photo @ fine_to_crop - np.array([[0, 0, offset[0]], [0, 0, offset[1]]])
    image = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)[None].float()
    sampled = warp_affine(image, fine_to_source, (size * k, size * k), padding="border")
    crop = F.avg_pool2d(sampled, k)[0] if k > 1 else sampled[0]
    return AlignedFace(crop=crop, crop_to_photo=crop_to_photo, face=face)
