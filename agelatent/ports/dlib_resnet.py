"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a plain PyTorch module.

Why a port: dlib-bin runs one face at a time on one CPU core (no BLAS) and gives no gradients; the RL loop
needs batched, differentiable identity embeddings (``make bench`` compares the two). The weights are read straight from dlib's
``.dat`` file by :mod:`agelatent.ports.dlib_format` (no dlib needed at load time); parity with
dlib-bin's ``compute_face_descriptor`` is tested on real faces (``tests/test_identity_port.py``).

Input: float RGB chips ``[N, 3, 150, 150]`` in 0..255, aligned the way ``dlib.get_face_chip(img, shape,
size=150, padding=0.25)`` aligns them (five-point landmarks). Output: ``[N, 128]`` descriptors; two faces are
the same person when the euclidean distance is below 0.6 (:data:`SAME_PERSON_DISTANCE`).

dlib semantics reproduced here (each is a place where a "standard" ResNet would differ):

* Q1 input normalisation: ``(x - mean_rgb) / 256`` with the means stored in the file
  (122.782, 117.001, 104.298); divide by 256, not 255, and no std.
* Q2 ``con_`` default padding: 0 for strided convs, ``kernel // 2`` otherwise. So the 7x7/2 stem and the
  3x3/2 convs are *unpadded* (150 -> 72 after the stem).
* Q3 pooling padding follows the same rule (3x3/2 max pool and 2x2/2 avg pool unpadded); output size is
  ``1 + (in - window) // stride``, the usual floor.
* Q4 ``add_prev`` with operands of different shapes: the output takes the max of each dim and the smaller
  operand is zero-padded at the end (top-left aligned), channels included. This happens in every
  downsampling unit (the shortcut avg-pool has fewer channels, and e.g. 3x3 vs 4x4 spatially at 8x8 input).
* Q5 ``affine_``: per-channel ``x * gamma + beta`` (batch norm frozen into it); we fold it into the preceding
  conv at load time, which is exact up to float rounding.
* Q6 ``avg_pool_everything`` averages the whole last map, zero-padded cells from Q4 included.
* Q7 ``fc_no_bias`` stores its matrix as ``[inputs, outputs]``; transposed at load.

Speed: about 0.55 GFLOP per face, nearly all in the convolutions. Measured on a 2-core CPU at batch 32
(``experiments/bench_identity.py``): ~700 descriptors/s vs ~18/s for dlib-bin. What helped: channels_last
(oneDNN's direct convolutions; up to +35%), folding the affines into the convs (+~15%, 29 fewer elementwise
passes), in-place relus (+~10%).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agelatent.ports.dlib_format import (
    AffineParams,
    ConvParams,
    FaceResNetWeights,
    ResBlockWeights,
    read_face_resnet,
)
from agelatent.store import model_path

__all__ = ["CHIP_PADDING", "CHIP_SIZE", "SAME_PERSON_DISTANCE", "DlibFaceResNet"]

CHIP_SIZE = 150  # input_rgb_image_sized<150>
CHIP_PADDING = 0.25  # dlib.get_face_chip default, what the network was trained with
DESCRIPTOR_DIM = 128  # the loss_metric layer's output
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold (= the loss_metric distance threshold in the file)


def _conv(p: ConvParams, affine: AffineParams | None) -> nn.Conv2d:
    """A Conv2d holding dlib's conv; with ``affine`` given, the affine is folded in (Q5)."""
    out_ch, in_ch, kh, kw = p.weight.shape
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=p.stride, padding=p.padding, bias=True)
    w = torch.from_numpy(p.weight).double()
    b = torch.from_numpy(p.bias).double()
    if affine is not None:
        g = torch.from_numpy(affine.gamma).double()
        w = w * g[:, None, None, None]
        b = b * g + torch.from_numpy(affine.beta).double()
    with torch.no_grad():
        conv.weight.copy_(w.float())
        conv.bias.copy_(b.float())
    return conv


class _Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE, kept separate (only used with ``fold_affine=False``)."""

    def __init__(self, p: AffineParams) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(p.gamma).view(1, -1, 1, 1).clone())
        self.beta = nn.Parameter(torch.from_numpy(p.beta).view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _conv_affine(p: ConvParams, a: AffineParams, fold: bool) -> nn.Module:
    return _conv(p, a) if fold else nn.Sequential(_conv(p, None), _Affine(a))


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev`` (Q4): sum over the max shape, each operand zero-padded at the end of every dim."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ResidualUnit(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(block(x) + shortcut(x)), block = conv-affine-relu-conv-affine."""

    def __init__(self, b: ResBlockWeights, fold: bool) -> None:
        super().__init__()
        self.conv1 = _conv_affine(b.conv1, b.affine1, fold)
        self.conv2 = _conv_affine(b.conv2, b.affine2, fold)
        self.downsample = bool(b.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place relus are safe for autograd here (conv/add backward does not need their outputs) and save
        # a memory pass each.
        y = self.conv2(F.relu_(self.conv1(x)))
        # Downsampling units: 2x2/2 avg-pooled shortcut, no 1x1 projection; channels grow by zero-padding (Q4)
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu_(_add_zero_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's 29-conv face-recognition ResNet: ``[N,3,150,150]`` RGB in 0..255 -> ``[N,128]`` descriptors.

    Frozen after construction (``eval()``, no parameter gradients) but differentiable w.r.t. the input.
    Build it with :meth:`from_dat`.
    """

    def __init__(
        self, weights: FaceResNetWeights, fold_affine: bool = True, channels_last: bool = True
    ) -> None:
        super().__init__()
        mean = torch.tensor(weights.input_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("input_mean", mean)  # Q1
        self.input_scale = 1.0 / 256.0  # Q1
        self.distance_threshold = float(weights.loss_distance_threshold)
        self.stem = _conv_affine(weights.stem_conv, weights.stem_affine, fold_affine)
        self.units = nn.Sequential(*(_ResidualUnit(b, fold_affine) for b in weights.blocks))
        self.fc = nn.Linear(weights.fc_weight.shape[1], weights.fc_weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(weights.fc_weight))
        self.channels_last = channels_last
        self.source = weights.source
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_dat(cls, path: str | os.PathLike | None = None, **kwargs) -> DlibFaceResNet:
        """Load the ``.dat`` at ``path`` (default: the pinned, sha256-checked copy from the model store)."""
        if path is None:
            path = model_path("dlib_face_resnet")
        return cls(read_face_resnet(Path(path)), **kwargs)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.dim() != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(
                f"DlibFaceResNet expects RGB chips [N, 3, {CHIP_SIZE}, {CHIP_SIZE}] in 0..255 "
                f"(dlib.get_face_chip, size={CHIP_SIZE}, padding={CHIP_PADDING}); got {tuple(chips.shape)}"
            )
        if not chips.is_floating_point():
            chips = chips.float()
        x = (chips - self.input_mean) * self.input_scale  # Q1: exact, 1/256 is a power of two
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu_(self.stem(x))  # Q2: 7x7/2 unpadded, 150 -> 72
        x = F.max_pool2d(x, 3, 2)  # Q3: unpadded, 72 -> 35
        x = self.units(x)
        x = x.mean(dim=(2, 3))  # Q6
        return self.fc(x)  # Q7

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between descriptors (dlib's metric); same person when < 0.6."""
        return torch.linalg.vector_norm(a - b, dim=-1)
