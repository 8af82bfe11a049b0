"""The embedded world's perception: dlib alignment, dlib-models age/gender, dlib's face descriptor.

One call scores a batch of generated faces (``[B, 3, H, W]`` in [-1, 1], the generator's range):

1. Upsample bicubically to the work size (256) on the 0..255 scale: the image dlib's recipe works on.
2. Five-point landmarks from dlib's shape predictor on that image, with a constant face rectangle
   (generated faces are centred: see :data:`~agelatent.perception.align.GENERATED_FACE_RECT`): dlib-bin
   on a CPU, its batched torch port on other devices (``perception.landmarks``; the same landmarks).
   Landmarks are constants for autograd (``detach``).
3. Three chips of the work image with dlib's geometry, differentiably: 64x64 and 32x32 with padding 0.2
   (age, gender), 150x150 with padding 0.25 (identity). The two small ones come from the generator's
   64x64 image directly (each pyramid level of the work image is a separable linear map of it:
   :func:`~agelatent.perception.align.extract_chips_upsampled`), the large one from the work image.
4. Age (years, expectation over 81 bins), P(male), and the 128-d identity descriptor.

**Alignment jitter** (``age_jitter``, training only). An editor that follows the age network's gradient
can learn the reward's exact crop instead of age. With ``age_jitter.crops = K > 0`` and augmentation on
(:meth:`EmbeddedPerception.augmentation`, which ``agelatent-train`` turns on for its training env and off
for its reports; evaluation never turns it on), the age is the mean over K age chips, each cut after a
random similarity change of the landmarks (shift up to ``shift`` of the outer-eye-corner distance in x and y, scale by
up to ``1 ± scale``, rotation up to ``rotate_degrees``) and mirrored with probability 1/2 when ``flip``.
Gender and identity keep the exact alignment. The draws come from the perception's own seeded generator.

Identity similarity is ``1 - d`` with ``d`` the euclidean distance between descriptors: dlib's own metric,
whose published rule "same person when d < 0.6" becomes similarity > 0.4
(:attr:`EmbeddedPerception.same_person_similarity`). The descriptors are not unit length (norm 1.2-1.5 on
generated faces), so a cosine would throw that calibration away. Measured on 256 generated faces:
different seeds sit at d = 0.685 (median; 5th percentile 0.567), so the MDP's identity bounds for this
world are tighter than dlib's rule (see ``conf/identity/``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from agelatent.perception.align import (
    DEFAULT_PADDING,
    GENERATED_FACE_RECT,
    GENERATED_FACE_WORK_SIZE,
    FivePointLandmarker,
    extract_chips_upsampled,
    face_chip_details,
    rescale_landmarks,
    resize_bicubic,
)
from agelatent.perception.base import FaceScores, Perception, check_finite
from agelatent.perception.onnx_models import (
    AGE_RANGE_YEARS,
    CHIP_PADDING,
    RUNTIMES,
    AgeEstimator,
    GenderClassifier,
    OrtSettings,
)
from agelatent.perception.robust import RobustReading
from agelatent.ports.dlib_resnet import DESCRIPTOR_DIM, DlibFaceResNet

__all__ = ["DLIB_SAME_PERSON_DISTANCE", "AlignmentJitter", "EmbeddedPerception"]

#: dlib's published decision rule for its face descriptor: same person when the distance is below this.
DLIB_SAME_PERSON_DISTANCE = 0.6


@dataclass(frozen=True, kw_only=True)
class AlignmentJitter:
    """Random alignment changes of the age chip (values: ``perception.age_jitter``; see the module docstring)."""

    crops: int  # K jittered age chips averaged per face; 0 = off
    shift: float  # max shift in x and y, as a fraction of the face's size (outer-eye-corner distance)
    scale: float  # max relative scale change
    rotate_degrees: float
    flip: bool  # mirror each chip with probability 1/2
    seed: int

    def __post_init__(self) -> None:
        if self.crops < 0:
            raise ValueError(f"perception.age_jitter.crops must be >= 0 (0 = off), got {self.crops}")
        for name, hi in (("shift", 0.5), ("scale", 0.5), ("rotate_degrees", 45.0)):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= hi):
                raise ValueError(f"perception.age_jitter.{name} must be in [0, {hi:g}], got {value!r}")

    def perturb(
        self, landmarks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 5, 2]`` float64 landmarks -> (K jittered copies ``[K*B, 5, 2]`` (crop-major), flip ``[K*B]``)."""
        k, b = self.crops, len(landmarks)
        u = torch.rand(k * b, 5, generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1)
        lm = landmarks.repeat(k, 1, 1)
        centre = lm.mean(1, keepdim=True)
        size = (lm[:, 0, 0] - lm[:, 2, 0]).abs().clamp_min(1.0)[:, None, None]  # outer eye corners
        angle = u[:, 0] * math.radians(self.rotate_degrees)
        factor = 1.0 + u[:, 1] * self.scale
        cos, sin = torch.cos(angle) * factor, torch.sin(angle) * factor
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [KB, 2, 2]
        shift = u[:, 2:4, None].transpose(1, 2) * self.shift * size  # [KB, 1, 2]
        moved = centre + (lm - centre) @ rot.transpose(1, 2) + shift
        flip = (u[:, 4] > 0) if self.flip else torch.zeros(k * b, dtype=torch.bool)
        return moved, flip


class EmbeddedPerception(Perception):
    """Frozen face networks of the embedded world behind one batched call (see the module docstring).

    ``runtime``: ``"torch"`` (default; differentiable, the ONNX graphs converted with onnx2torch) or
    ``"onnxruntime"`` (ages and gender through onnxruntime sessions; not differentiable). The identity
    network is always the project's torch port of dlib's ResNet. Every ``*_path`` overrides the pinned,
    sha256-checked copy from the model store with a local file.
    """

    #: dlib-models age-v1's 81 classes: under one year, then 1..80 years
    age_range: ClassVar[tuple[float, float]] = AGE_RANGE_YEARS
    #: dlib's face descriptor
    identity_dim: ClassVar[int] = DESCRIPTOR_DIM

    def __init__(
        self,
        *,
        runtime: str = "torch",
        age_path: str | Path | None = None,
        gender_path: str | Path | None = None,
        identity_path: str | Path | None = None,
        predictor_path: str | Path | None = None,
        work_size: int | None = None,
        face_rect: Sequence[int] | None = None,
        ort_threads: int = 0,
        age_jitter: Mapping | None = None,
        landmarks: str = "auto",
        robust_age: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.robust_age = RobustReading.from_config(robust_age)  # checked before any load
        self.age_jitter = AlignmentJitter(**age_jitter) if age_jitter else None  # checked before any load
        if runtime not in RUNTIMES:
            raise ValueError(f"perception.runtime must be one of {RUNTIMES}, got {runtime!r}")
        work_size = GENERATED_FACE_WORK_SIZE if work_size is None else work_size
        face_rect = GENERATED_FACE_RECT if face_rect is None else face_rect
        if work_size < 64:
            raise ValueError(
                f"perception.work_size must be >= 64 (the chips are cut from it), got {work_size}"
            )
        settings = OrtSettings(intra_op_num_threads=ort_threads) if runtime == "onnxruntime" else None
        self.landmarker = FivePointLandmarker(
            predictor_path, work_size=work_size, rect=face_rect, backend=landmarks
        )
        self.age_model = AgeEstimator(age_path, runtime, ort_settings=settings)
        self.gender_model = GenderClassifier(gender_path, runtime, ort_settings=settings)
        self.identity_model = DlibFaceResNet.from_dat(identity_path)
        self.work_size = int(work_size)
        self.runtime = runtime
        self.same_person_similarity = 1.0 - DLIB_SAME_PERSON_DISTANCE
        self._jitter_rng = torch.Generator().manual_seed(self.age_jitter.seed if self.age_jitter else 0)
        self._augment = False
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)
        self.eval()
        self.requires_grad_(False)

    @property
    def differentiable(self) -> bool:
        return self.age_model.differentiable

    def _apply(self, fn, recurse=True):
        # The ONNX-derived models are not submodules (they wrap runners); move them with the module.
        out = super()._apply(fn, recurse)
        device = self._device_probe.device
        self.age_model.to(device)
        self.gender_model.to(device)
        return out

    def work_images(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output ``[B, 3, H, W]`` in [-1, 1] -> the 0..255 work image ``[B, 3, S, S]``."""
        return resize_bicubic(self.pixels(images), self.work_size)

    @staticmethod
    def pixels(images: torch.Tensor) -> torch.Tensor:
        """Generator output ``[B, 3, H, W]`` in [-1, 1] -> the same images on the 0..255 scale."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W] RGB in [-1, 1], got {tuple(images.shape)}")
        return (images.float() + 1.0) * 127.5

    def landmarks(self, work: torch.Tensor) -> torch.Tensor:
        """Five-point landmarks ``[B, 5, 2]`` (work-image pixels, float64 CPU); constants for autograd."""
        return self.landmarker(work.detach())

    def chips(
        self,
        pixels: torch.Tensor,
        landmarks: torch.Tensor,
        size: int,
        padding: float,
        work: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """dlib-style chips ``[B, 3, size, size]`` of the work image of ``pixels`` (the generator's images on
        0..255) at given landmarks (alignment held fixed), cut from ``pixels`` directly
        (:func:`~agelatent.perception.align.extract_chips_upsampled`); ``work``: the work image, if at hand."""
        details = face_chip_details(landmarks, size, padding)
        return extract_chips_upsampled(pixels, self.work_size, details, work=work)

    @property
    def augmenting(self) -> bool:
        """Whether ages are currently averaged over jittered alignments (see :meth:`augmentation`)."""
        return self._augment and self.age_jitter is not None and self.age_jitter.crops > 0

    @contextlib.contextmanager
    def augmentation(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, ages use the configured ``age_jitter`` (a no-op when it is off)."""
        before, self._augment = self._augment, enabled
        try:
            yield
        finally:
            self._augment = before

    def _age(self, pixels: torch.Tensor, work: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        if not self.augmenting:
            return self.age_model(self.chips(pixels, lm, 64, CHIP_PADDING, work))
        k, b = self.age_jitter.crops, len(pixels)
        moved, flip = self.age_jitter.perturb(lm, self._jitter_rng)
        chips = self.chips(pixels.repeat(k, 1, 1, 1), moved, 64, CHIP_PADDING, work.repeat(k, 1, 1, 1))
        chips = torch.where(flip.to(chips.device)[:, None, None, None], chips.flip(-1), chips)
        return self.age_model(chips).reshape(k, b).mean(0)

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages in years ``[B]`` (skips gender and identity)."""
        pixels = self.pixels(images)
        work = resize_bicubic(pixels, self.work_size)
        ages = self._age(pixels, work, self.landmarks(work))
        check_finite({"ages": ages}, "the embedded perception's age network (dlib-models age-v1)")
        return ages

    def forward(self, images: torch.Tensor) -> FaceScores:
        pixels = self.pixels(images)
        work = resize_bicubic(pixels, self.work_size)
        lm = self.landmarks(work)
        ages = self._age(pixels, work, lm)
        p_male = self.gender_model(self.chips(pixels, lm, 32, CHIP_PADDING, work))
        identity = self.identity_model(self.chips(pixels, lm, 150, DEFAULT_PADDING, work))
        check_finite(
            {"ages": ages, "gender probabilities": p_male, "identity embeddings": identity},
            "the embedded perception's networks (dlib-models age-v1 and gender-v1, dlib's face descriptor)",
        )
        return FaceScores(ages_years=ages, identity=identity, p_male=p_male)

    def five_point_landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """The landmarks the chips are cut at, in the images' pixels (``[B, 5, 2]``, float64 CPU)."""
        work = self.work_images(images)
        return rescale_landmarks(self.landmarks(work), tuple(work.shape[-2:]), tuple(images.shape[-2:]))

    @staticmethod
    def identity_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``1 - euclidean distance`` between identity descriptors (broadcasting over leading dims)."""
        return 1.0 - torch.linalg.vector_norm(a - b, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"runtime={self.runtime!r}, work_size={self.work_size}, rect={self.landmarker.rect}, "
            f"age_jitter={self.age_jitter}"
        )
