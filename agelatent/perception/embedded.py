"""The embedded world's perception: dlib alignment, dlib-models age/gender, dlib's face descriptor.

One call scores a batch of generated faces (``[B, 3, H, W]`` in [-1, 1], the generator's range):

1. Upsample bicubically to the work size (256) on the 0..255 scale: the image dlib's recipe works on.
2. Five-point landmarks from dlib's shape predictor on that image, with a constant face rectangle
   (generated faces are centred: see :data:`~agelatent.perception.align.GENERATED_FACE_RECT`). This is
   the only per-image Python loop, and landmarks are constants for autograd (``detach``).
3. Three chips cut from the work image with dlib's geometry, differentiably: 64x64 and 32x32 with
   padding 0.2 (age, gender), 150x150 with padding 0.25 (identity).
4. Age (years, expectation over 81 bins), P(male), and the 128-d identity descriptor.

Identity similarity is ``1 - d`` with ``d`` the euclidean distance between descriptors: dlib's own metric,
whose published rule "same person when d < 0.6" becomes similarity > 0.4
(:attr:`EmbeddedPerception.same_person_similarity`). The descriptors are not unit length (norm 1.2-1.5 on
generated faces), so a cosine would throw that calibration away. Measured on 256 generated faces:
different seeds sit at d = 0.685 (median; 5th percentile 0.567), so the MDP's identity bounds for this
world are tighter than dlib's rule (see ``conf/identity/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from agelatent.perception.align import (
    DEFAULT_PADDING,
    GENERATED_FACE_RECT,
    GENERATED_FACE_WORK_SIZE,
    FivePointLandmarker,
    extract_chips,
    face_chip_details,
    resize_bicubic,
)
from agelatent.perception.base import FaceScores, check_finite
from agelatent.perception.dlib_resnet import DlibFaceResNet
from agelatent.perception.onnx_models import (
    AGE_RANGE_YEARS,
    CHIP_PADDING,
    RUNTIMES,
    AgeEstimator,
    GenderClassifier,
    OrtSettings,
)

__all__ = ["DLIB_SAME_PERSON_DISTANCE", "EmbeddedPerception"]

#: dlib's published decision rule for its face descriptor: same person when the distance is below this.
DLIB_SAME_PERSON_DISTANCE = 0.6


class EmbeddedPerception(nn.Module):
    """Frozen face networks of the embedded world behind one batched call (see the module docstring).

    ``runtime``: ``"torch"`` (default; differentiable, the ONNX graphs converted with onnx2torch) or
    ``"onnxruntime"`` (ages and gender through onnxruntime sessions; not differentiable). The identity
    network is always the project's torch port of dlib's ResNet. Every ``*_path`` overrides the pinned,
    sha256-checked copy from the model store with a local file.
    """

    #: dlib-models age-v1's 81 classes: under one year, then 1..80 years
    age_range: ClassVar[tuple[float, float]] = AGE_RANGE_YEARS

    def __init__(
        self,
        *,
        runtime: str = "torch",
        age_path: str | Path | None = None,
        gender_path: str | Path | None = None,
        identity_path: str | Path | None = None,
        predictor_path: str | Path | None = None,
        work_size: int = GENERATED_FACE_WORK_SIZE,
        face_rect: Sequence[int] = GENERATED_FACE_RECT,
        ort_threads: int = 0,
    ) -> None:
        super().__init__()
        if runtime not in RUNTIMES:
            raise ValueError(f"perception.runtime must be one of {RUNTIMES}, got {runtime!r}")
        if work_size < 64:
            raise ValueError(
                f"perception.work_size must be >= 64 (the chips are cut from it), got {work_size}"
            )
        settings = OrtSettings(intra_op_num_threads=ort_threads) if runtime == "onnxruntime" else None
        self.landmarker = FivePointLandmarker(predictor_path, work_size=work_size, rect=face_rect)
        self.age_model = AgeEstimator(age_path, runtime, ort_settings=settings)
        self.gender_model = GenderClassifier(gender_path, runtime, ort_settings=settings)
        self.identity_model = DlibFaceResNet.from_dat(identity_path)
        self.work_size = int(work_size)
        self.runtime = runtime
        self.same_person_similarity = 1.0 - DLIB_SAME_PERSON_DISTANCE
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
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W] RGB in [-1, 1], got {tuple(images.shape)}")
        return resize_bicubic((images.float() + 1.0) * 127.5, self.work_size)

    def landmarks(self, work: torch.Tensor) -> torch.Tensor:
        """Five-point landmarks ``[B, 5, 2]`` (work-image pixels, float64 CPU); constants for autograd."""
        return self.landmarker(work.detach())

    def chips(self, work: torch.Tensor, landmarks: torch.Tensor, size: int, padding: float) -> torch.Tensor:
        """dlib-style chips ``[B, 3, size, size]`` of work images at given landmarks (alignment held fixed)."""
        return extract_chips(work, face_chip_details(landmarks, size, padding))

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages in years ``[B]`` (skips gender and identity)."""
        work = self.work_images(images)
        lm = self.landmarks(work)
        ages = self.age_model(self.chips(work, lm, 64, CHIP_PADDING))
        check_finite({"ages": ages}, "the embedded perception's age network (dlib-models age-v1)")
        return ages

    def forward(self, images: torch.Tensor) -> FaceScores:
        work = self.work_images(images)
        lm = self.landmarks(work)
        ages = self.age_model(self.chips(work, lm, 64, CHIP_PADDING))
        p_male = self.gender_model(self.chips(work, lm, 32, CHIP_PADDING))
        identity = self.identity_model(self.chips(work, lm, 150, DEFAULT_PADDING))
        check_finite(
            {"ages": ages, "gender probabilities": p_male, "identity embeddings": identity},
            "the embedded perception's networks (dlib-models age-v1 and gender-v1, dlib's face descriptor)",
        )
        return FaceScores(ages_years=ages, identity=identity, p_male=p_male)

    @staticmethod
    def identity_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``1 - euclidean distance`` between identity descriptors (broadcasting over leading dims)."""
        return 1.0 - torch.linalg.vector_norm(a - b, dim=-1)

    def extra_repr(self) -> str:
        return f"runtime={self.runtime!r}, work_size={self.work_size}, rect={self.landmarker.rect}"
