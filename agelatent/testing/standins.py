"""Random-weight stand-ins for the paper-grade world's weight files, in their exact formats.

The real files (the FFHQ StyleGAN2 checkpoint, insightface's ``w600k_r50.onnx`` and ``genderage.onnx``)
cannot be fetched here, so tests and ``experiments/gpu_smoke.py`` write files with the same structure and
random weights: everything that reads them runs exactly as it would on the real ones, only the numbers are
noise.

StyleGAN2 (rosinality/stylegan2-pytorch format): ``torch.save({"g_ema": state_dict, "latent_avg": w})``, whose
key names and shapes are listed by :func:`stylegan2_shapes` from the format itself (independently of
:mod:`agelatent.generators.stylegan2`, which must load them); weights follow the reference's storage
conventions (mapping weights stored as ``N(0, 1) / lr_mul``, blur kernels with gain 4, modulation biases
near 1). Any size, channel widths, style size and mapping depth: ``channel_multiplier=2`` at 1024 px is FFHQ
config-f.

insightface: ArcFace ``'input.1' [None, 3, 112, 112] -> '683' [None, 512]`` (a PyTorch export: no Sub/Mul
among the first nodes, so insightface normalises with 127.5/127.5) and genderage ``'data' [None, 3, 96, 96] ->
'fc1' [1, 3]`` as MXNet exported it (first node ``bn_data``, weights also listed as graph inputs, so
insightface feeds raw 0..255 pixels), or PyTorch-style (insightface: 127.5/128). The tensor names are the ones
usually reported for buffalo_l (not verifiable here); agelatent reads names from the file, so nothing depends
on them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "BLUR_4X4",
    "LR_MLP",
    "arcface_stand_in",
    "genderage_stand_in",
    "random_stylegan2_state",
    "save_stylegan2_checkpoint",
    "stylegan2_shapes",
    "write_insightface_pack",
    "write_stylegan2_checkpoint",
]

#: ``make_kernel([1, 3, 3, 1])`` of the reference: the normalised 4x4 FIR low-pass (the files store it x4).
BLUR_4X4 = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
#: The mapping network's learning-rate multiplier (not recorded in the format; 0.01 in the reference).
LR_MLP = 0.01


# --- StyleGAN2, rosinality format -------------------------------------------------------------------------
def stylegan2_shapes(size: int, style_dim: int, n_mlp: int, channels: dict[int, int]) -> dict[str, tuple]:
    """Every key of a rosinality ``Generator.state_dict()`` with its shape (``channels``: width per size)."""
    keys: dict[str, tuple] = {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
        keys[f"style.{i}.weight"] = (style_dim, style_dim)
        keys[f"style.{i}.bias"] = (style_dim,)
    keys["input.input"] = (1, channels[4], 4, 4)

    def styled(prefix: str, c_in: int, c_out: int, up: bool) -> None:
        keys[f"{prefix}.conv.weight"] = (1, c_out, c_in, 3, 3)
        keys[f"{prefix}.conv.modulation.weight"] = (c_in, style_dim)
        keys[f"{prefix}.conv.modulation.bias"] = (c_in,)
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
        keys[f"{prefix}.noise.weight"] = (1,)
        keys[f"{prefix}.activate.bias"] = (c_out,)

    def to_rgb(prefix: str, c_in: int, up: bool) -> None:
        keys[f"{prefix}.conv.weight"] = (1, 3, c_in, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"] = (c_in, style_dim)
        keys[f"{prefix}.conv.modulation.bias"] = (c_in,)
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", channels[4], channels[4], False)
    to_rgb("to_rgb1", channels[4], False)
    log_size = int(math.log2(size))
    for k in range(2 * (log_size - 2) + 1):
        res = 4 * 2 ** ((k + 1) // 2)
        keys[f"noises.noise_{k}"] = (1, 1, res, res)
    for level in range(log_size - 2):
        res = 8 * 2**level
        styled(f"convs.{2 * level}", channels[res // 2], channels[res], True)
        styled(f"convs.{2 * level + 1}", channels[res], channels[res], False)
        to_rgb(f"to_rgbs.{level}", channels[res], True)
    return keys


def random_stylegan2_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for ``shapes`` with the reference's storage conventions (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda shape, std=1.0, mean=0.0: torch.randn(shape, generator=gen) * std + mean
    state = {}
    for key, shape in shapes.items():
        if key.endswith("kernel"):
            state[key] = torch.tensor(BLUR_4X4 * 4, dtype=torch.float32)  # both kernels carry gain 4
        elif key.startswith("style.") and key.endswith("weight"):
            state[key] = rand(shape, 1 / LR_MLP)
        elif key.endswith("modulation.bias"):
            state[key] = rand(shape, 0.1, 1.0)  # initialised to 1 in the reference
        elif key.endswith("bias") or key.endswith("noise.weight"):
            state[key] = rand(shape, 0.1)
        else:
            state[key] = rand(shape)
    return state


def save_stylegan2_checkpoint(
    path: str | Path, state: dict[str, torch.Tensor], *, seed: int = 0, **extra
) -> Path:
    """``torch.save({"g_ema": state, "latent_avg": w, **extra}, path)`` (``latent_avg`` random, seeded)."""
    style_dim = state["conv1.conv.modulation.weight"].shape[1]
    latent_avg = torch.randn(style_dim, generator=torch.Generator().manual_seed(seed + 1))
    torch.save({"g_ema": state, "latent_avg": latent_avg, **extra}, path)
    return Path(path)


def write_stylegan2_checkpoint(
    path: str | Path,
    size: int,
    *,
    channel_multiplier: int = 2,
    channels: dict[int, int] | None = None,
    style_dim: int = 512,
    n_mlp: int = 8,
    seed: int = 0,
) -> Path:
    """A random-weight generator checkpoint: ``size`` px, the reference's widths for ``channel_multiplier``
    unless ``channels`` overrides them (``size=1024, channel_multiplier=2``: FFHQ config-f, 30.37M
    parameters)."""
    if channels is None:
        from agelatent.generators.stylegan2 import standard_channels

        channels = standard_channels(size, channel_multiplier)
    state = random_stylegan2_state(stylegan2_shapes(size, style_dim, n_mlp, channels), seed=seed)
    return save_stylegan2_checkpoint(path, state, seed=seed)


# --- insightface ONNX files -------------------------------------------------------------------------------
def _save_onnx(path, nodes, inputs, outputs, weights, *, weights_as_inputs: bool = False) -> str:
    initializers = [numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in weights.items()]
    if weights_as_inputs:  # the MXNet exporter's layout (ONNX IR < 4 style)
        inputs = inputs + [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in weights.items()
        ]
    graph = helper.make_graph(nodes, "stand_in", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def arcface_stand_in(path, *, size: int = 112, width: int = 512, seed: int = 0) -> str:
    """PyTorch-export-like ArcFace: Conv/PRelu/Flatten/Gemm, 'input.1' [None,3,S,S] -> '683' [None,width]."""
    rng = np.random.default_rng(seed)
    cells = (size // 8) ** 2
    weights = {
        "conv_w": rng.normal(0, 0.05, (8, 3, 8, 8)),
        "conv_b": rng.normal(0, 0.1, 8),
        "prelu_slope": np.full((8, 1, 1), 0.25),
        "fc_w": rng.normal(0, 0.03, (width, 8 * cells)),
        "fc_b": rng.normal(0, 0.01, width),
    }
    nodes = [
        helper.make_node(
            "Conv", ["input.1", "conv_w", "conv_b"], ["c"], "Conv_0", kernel_shape=[8, 8], strides=[8, 8]
        ),
        helper.make_node("PRelu", ["c", "prelu_slope"], ["p"], "PRelu_1"),
        helper.make_node("Flatten", ["p"], ["f"], "Flatten_2", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"], "Gemm_3", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, size, size])]
    outputs = [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", width])]
    return _save_onnx(path, nodes, inputs, outputs, weights)


def genderage_stand_in(
    path, *, mxnet: bool = True, outputs_width: int = 3, size: int = 96, seed: int = 1
) -> str:
    """genderage-like: 'data' [None,3,96,96] -> 'fc1' [1,width]; ``mxnet`` = normalises inside (bn_data)."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv0_weight": rng.normal(0, 0.05, (8, 3, 8, 8)),
        "fc1_weight": rng.normal(0, 0.05, (outputs_width, 8 * (size // 8) ** 2)),
        "fc1_bias": np.linspace(-0.2, 0.3, outputs_width),
    }
    nodes = []
    first = "data"
    if mxnet:
        weights |= {
            "bn_data_gamma": np.ones(3),
            "bn_data_beta": np.zeros(3),
            "bn_data_moving_mean": np.full(3, 127.5),
            "bn_data_moving_var": np.full(3, 128.0**2),
        }
        names = ["data", "bn_data_gamma", "bn_data_beta", "bn_data_moving_mean", "bn_data_moving_var"]
        nodes.append(helper.make_node("BatchNormalization", names, ["bn_data"], "bn_data", epsilon=2e-5))
        first = "bn_data"
    prefix = "" if mxnet else "_"  # PyTorch-export-like names: "Conv_0", ...
    nodes += [
        helper.make_node(
            "Conv", [first, "conv0_weight"], ["conv0"], f"{prefix}conv0", kernel_shape=[8, 8], strides=[8, 8]
        ),
        helper.make_node("Relu", ["conv0"], ["relu0"], f"{prefix}relu0"),
        helper.make_node("Flatten", ["relu0"], ["flat"], f"{prefix}flatten0"),
        helper.make_node("Gemm", ["flat", "fc1_weight", "fc1_bias"], ["fc1"], f"{prefix}fc1", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, size, size])]
    outputs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, outputs_width])]
    return _save_onnx(path, nodes, inputs, outputs, weights, weights_as_inputs=mxnet)


def write_insightface_pack(directory: str | Path) -> dict[str, str]:
    """``w600k_r50.onnx`` + ``genderage.onnx`` stand-ins in ``directory`` (as an unzipped buffalo_l has them).

    Returns ``{"recognition": path, "genderage": path}``, for ``perception.recognition_path`` and
    ``perception.genderage_path``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "recognition": arcface_stand_in(directory / "w600k_r50.onnx"),
        "genderage": genderage_stand_in(directory / "genderage.onnx"),
    }
