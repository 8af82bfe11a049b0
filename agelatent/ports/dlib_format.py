"""Read dlib's binary serialization, and the face-recognition ResNet's ``.dat`` file in particular.

Pure Python + numpy: no dlib build is needed to load the weights. Only what the face-recognition network
uses is implemented, and every read is checked, because a ``.dat`` file carries no checksum: a truncated
file, a flipped byte in a tag, or a different network (e.g. a shape predictor) must stop with a
:class:`DlibFormatError` (a ``ValueError``) that names the file, the byte offset and what was expected,
never produce a silently wrong model.

dlib's encodings (see dlib's ``serialize.h``, ``float_details.h``, ``dnn/tensor.h``):

* integer: one control byte, low nibble = number of payload bytes (1..8; 0 is invalid), bit 0x80 = negative
  (signed types only), then the magnitude little-endian. Zero is ``01 00``.
* float/double: two integers, a 64-bit mantissa and a 16-bit exponent; value = mantissa * 2**exponent, except
  exponents 32000 / 32001 / 32002 = +inf / -inf / NaN. (dlib also reads an older ASCII float format, whose
  first byte has a bit of 0x70 set; we reject it as unexpected.)
* bool: one ASCII byte, ``'1'`` or ``'0'``.
* string: its length as an integer, then the raw bytes. Layer "tags" are such strings (e.g. ``"con_4"``).
* tensor (``resizable_tensor``): integer version 2, then num_samples, k, nr, nc as integers, then
  ``n*k*nr*nc`` raw little-endian IEEE float32 values.
* ``alias_tensor`` (a shape view into a layer's flat ``params``): integer version 1 and the four dims.

How a network is laid out (dlib's ``dnn/core.h``): ``add_loss_layer`` writes its version and loss details,
then the subnetwork. Each ``add_layer`` writes its version, then *its subnetwork*, then its own details and a
trailer (bools and scratch tensors); ``add_tag_layer`` / ``add_skip_layer`` write only a version and their
subnetwork. So the file starts with the chain of wrapper versions from the outermost layer inwards, then the
input layer, then each layer's details from the innermost (first computed) layer outwards. We therefore
check the file against the exact expected layer stack of ``dnn_face_recognition_ex.cpp`` (see
:func:`face_resnet_layer_stack`) and return the layers in forward order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FACE_RESNET_LEVELS",
    "AffineParams",
    "ConvParams",
    "DlibFormatError",
    "DlibReader",
    "FaceResNetWeights",
    "LayerSpec",
    "ResBlockWeights",
    "face_resnet_layer_stack",
    "parse_face_resnet",
    "read_face_resnet",
    "read_shape_predictor",
    "parse_shape_predictor",
    "ShapePredictorWeights",
]


class DlibFormatError(ValueError):
    """The file is not (or no longer) the dlib serialization we expect; the message says where and why."""


_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002
_CONV_MODE = 0  # dlib's layer_mode: CONV_MODE = 0 (per-channel), FC_MODE = 1 (per-element)
_FC_NO_BIAS = 1  # dlib's fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
_MAX_TENSOR_ELEMENTS = 1 << 31  # guards against absurd sizes read from a corrupt header


class DlibReader:
    """A cursor over the bytes of one dlib-serialized file; each ``read_*`` checks what it consumes."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.name = name
        self.pos = 0

    # -- errors --------------------------------------------------------------------------------------------
    def error(self, what: str, at: int | None = None) -> DlibFormatError:
        at = self.pos if at is None else at
        msg = f"{self.name}: not a valid dlib face-recognition model file: {what} (at byte {at})"
        return DlibFormatError(msg)

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(
                f"file ends while reading {what} (needs {n} bytes, {len(self.data) - self.pos} left; "
                "truncated or corrupt download?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    # -- scalars -------------------------------------------------------------------------------------------
    def read_int(self, what: str = "integer", signed: bool = True, max_bytes: int = 8) -> int:
        start = self.pos
        control = self._take(1, what)[0]
        size = control & 0x0F
        negative = bool(control & 0x80)
        # dlib's unsigned reader keeps bit 0x80 in the size (so a "negative" unsigned is a size error);
        # bits 0x70 are reserved and must be 0 for a valid integer.
        if control & 0x70 or size == 0 or size > max_bytes or (negative and not signed):
            raise self.error(f"bad integer control byte 0x{control:02x} for {what}", at=start)
        value = int.from_bytes(self._take(size, what), "little")
        return -value if negative else value

    def read_uint(self, what: str = "unsigned integer", max_bytes: int = 8) -> int:
        return self.read_int(what, signed=False, max_bytes=max_bytes)

    def read_float(self, what: str = "float") -> float:
        start = self.pos
        if self.remaining and self.data[self.pos] & 0x70:
            raise self.error(
                f"{what} is in dlib's old ASCII float format, which this reader does not accept", at=start
            )
        mantissa = self.read_int(f"{what} (mantissa)")
        exponent = self.read_int(f"{what} (exponent)", max_bytes=2)
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.error(f"{what} overflows ({mantissa} * 2**{exponent})", at=start) from None

    def read_bool(self, what: str = "bool") -> bool:
        start = self.pos
        ch = self._take(1, what)[0]
        if ch not in (ord("0"), ord("1")):
            raise self.error(f"bad bool byte 0x{ch:02x} for {what} (expected '0' or '1')", at=start)
        return ch == ord("1")

    def read_string(self, what: str = "string", max_len: int = 1 << 16) -> str:
        start = self.pos
        n = self.read_uint(f"length of {what}")
        if n > max_len:
            raise self.error(f"{what} claims a length of {n} bytes", at=start)
        raw = bytes(self._take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not ASCII: {raw[:40]!r}", at=start) from None

    def expect_string(self, expected: str | tuple[str, ...], what: str) -> str:
        start = self.pos
        options = (expected,) if isinstance(expected, str) else expected
        try:
            found = self.read_string(what)
        except DlibFormatError as err:
            wanted = " or ".join(map(repr, options))
            raise self.error(
                f"expected {what} {wanted}, but could not read a string ({err})", at=start
            ) from None
        if found not in options:
            raise self.error(f"expected {what} {' or '.join(map(repr, options))}, found {found!r}", at=start)
        return found

    def expect_int(self, expected: int | tuple[int, ...], what: str, signed: bool = True) -> int:
        start = self.pos
        options = (expected,) if isinstance(expected, int) else expected
        found = self.read_int(what, signed=signed)
        if found not in options:
            raise self.error(f"expected {what} = {' or '.join(map(str, options))}, found {found}", at=start)
        return found

    # -- tensors -------------------------------------------------------------------------------------------
    def _dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.read_int(f"{what} dim {i}") for i in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"{what} has negative dimensions {dims}")
        return dims  # type: ignore[return-value]

    def read_tensor(self, what: str = "tensor") -> np.ndarray:
        """A ``resizable_tensor``: returns a float32 array of shape (n, k, nr, nc) (a copy, native order)."""
        self.expect_int(2, f"{what} serialization version")
        dims = self._dims(what)
        count = int(np.prod(dims, dtype=np.int64))
        if count > _MAX_TENSOR_ELEMENTS:
            raise self.error(f"{what} claims {count} elements")
        raw = self._take(4 * count, f"{what} data ({count} float32)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        self.expect_int(1, f"{what} serialization version")
        return self._dims(what)


# ----------------------------------------------------------------------------------------------------------
# The face-recognition network's layer stack


@dataclass(frozen=True)
class LayerSpec:
    """One entry of the layer stack, outermost first: an add_layer with a detail tag, or a tag/skip layer."""

    kind: str  # "layer" | "input_layer" (add_layer directly over the input) | "tag" | "skip"
    detail: str = ""  # for layers: "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc", ...
    args: tuple = ()  # expected hyper-parameters, checked against the file
    note: str = ""  # human description for error messages

    @property
    def versions(self) -> tuple[int, ...]:
        # add_layer v2 ends with params_grad; its input-layer specialisation v3 adds sample_expansion_factor.
        # Only the versions whose field lists we checked against dlib's core.h are accepted.
        return {"layer": (2,), "input_layer": (2, 3), "tag": (1,), "skip": (1,)}[self.kind]


def _block(n: int, stride: int, where: str) -> list[LayerSpec]:
    """dlib's ``block<N,affine,stride>``: affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride>>>>>."""
    return [
        LayerSpec("layer", "affine", (), f"{where}: affine after 2nd conv"),
        LayerSpec("layer", "con", (n, 3, 3, 1, 1), f"{where}: 2nd conv"),
        LayerSpec("layer", "relu", (), f"{where}: relu"),
        LayerSpec("layer", "affine", (), f"{where}: affine after 1st conv"),
        LayerSpec("layer", "con", (n, 3, 3, stride, stride), f"{where}: 1st conv"),
    ]


def _ares(n: int, where: str) -> list[LayerSpec]:
    """``relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>``: identity residual."""
    return [
        LayerSpec("layer", "relu", (), f"{where}: relu after add"),
        LayerSpec("layer", "add_prev", (), f"{where}: add_prev1"),
        *_block(n, 1, where),
        LayerSpec("tag", note=f"{where}: tag1"),
    ]


def _ares_down(n: int, where: str) -> list[LayerSpec]:
    """Down residual: ``relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<S>>>>>>>``."""
    return [
        LayerSpec("layer", "relu", (), f"{where}: relu after add"),
        LayerSpec("layer", "add_prev", (), f"{where}: add_prev2"),
        LayerSpec("layer", "avg_pool", (2, 2, 2, 2), f"{where}: shortcut avg_pool"),
        LayerSpec("skip", note=f"{where}: skip1"),
        LayerSpec("tag", note=f"{where}: tag2"),
        *_block(n, 2, where),
        LayerSpec("tag", note=f"{where}: tag1"),
    ]


# (filters, number of residual units, whether the first unit downsamples), in forward order:
# alevel4 = 3x ares<32>; alevel3 = ares_down<64> + 3x ares<64>; alevel2 = ares_down<128> + 2x ares<128>;
# alevel1 = ares_down<256> + 2x ares<256>; alevel0 = ares_down<256>.
FACE_RESNET_LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


def face_resnet_layer_stack() -> list[LayerSpec]:
    """The ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``, outermost (fc) first, input last."""
    stack = [
        LayerSpec("layer", "fc", (128,), "final fc_no_bias<128>"),
        LayerSpec("layer", "avg_pool", (0, 0, 1, 1), "avg_pool_everything"),
    ]
    units: list[list[LayerSpec]] = []  # forward order
    for level, (n, count, down) in enumerate(FACE_RESNET_LEVELS):
        for i in range(count):
            where = f"level {len(FACE_RESNET_LEVELS) - 1 - level} ({n} filters) unit {i}"
            units.append(_ares_down(n, where) if (down and i == 0) else _ares(n, where))
    for unit in reversed(units):
        stack.extend(unit)
    stack += [
        LayerSpec("layer", "max_pool", (3, 3, 2, 2), "stem max_pool<3,3,2,2>"),
        LayerSpec("layer", "relu", (), "stem relu"),
        LayerSpec("layer", "affine", (), "stem affine"),
        LayerSpec("input_layer", "con", (32, 7, 7, 2, 2), "stem con<32,7,7,2,2>"),
    ]
    return stack


# ----------------------------------------------------------------------------------------------------------
# Parsed parameters


@dataclass
class ConvParams:
    weight: np.ndarray  # [out, in, kh, kw] float32 (dlib's filter layout is already torch's OIHW)
    bias: np.ndarray  # [out]
    stride: int
    padding: int


@dataclass
class AffineParams:
    """Per-channel ``y = x * gamma + beta``: dlib's ``affine_`` in CONV_MODE (a frozen batch norm)."""

    gamma: np.ndarray  # [C]
    beta: np.ndarray  # [C]
    source: str = "affine_"  # or "bn_con2" when converted from stored batch-norm statistics


@dataclass
class ResBlockWeights:
    conv1: ConvParams
    affine1: AffineParams
    conv2: ConvParams
    affine2: AffineParams
    downsample: bool  # stride-2 first conv, avg-pooled shortcut


@dataclass
class FaceResNetWeights:
    """Everything needed to rebuild dlib's face-recognition ResNet, in forward order."""

    input_mean: tuple[float, float, float]  # input_rgb_image_sized avg_red/green/blue, 0..255 scale
    input_size: tuple[int, int]  # (rows, cols) the input layer was built for: (150, 150)
    stem_conv: ConvParams
    stem_affine: AffineParams
    blocks: list[ResBlockWeights]
    fc_weight: np.ndarray  # [128, 256] (torch Linear layout; dlib stores [inputs, outputs])
    loss_margin: float
    loss_distance_threshold: float  # dlib's loss_metric "same person" distance (0.6)
    source: str = ""


# ----------------------------------------------------------------------------------------------------------
# Layer detail readers (each reads one layer's serialized details and checks its hyper-parameters)


def _read_con(r: DlibReader, w: LayerSpec) -> ConvParams:
    start = r.pos
    r.expect_string("con_4", f"layer tag for {w.note}")
    params = r.read_tensor(f"{w.note} params").reshape(-1)
    num_filters = r.read_int("num_filters")
    nr, nc = r.read_int("nr"), r.read_int("nc")
    stride_y, stride_x = r.read_int("stride_y"), r.read_int("stride_x")
    pad_y, pad_x = r.read_int("padding_y"), r.read_int("padding_x")
    filters = r.read_alias_tensor("filters")
    biases = r.read_alias_tensor("biases")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.read_float(name)
    want_n, want_nr, want_nc, want_sy, want_sx = w.args
    # dlib's con_ default padding: 0 when strided, else kernel//2 ("same") -- a quirk we must mirror.
    want_pad_y = 0 if want_sy != 1 else want_nr // 2
    want_pad_x = 0 if want_sx != 1 else want_nc // 2
    found = (num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x)
    want = (want_n, want_nr, want_nc, want_sy, want_sx, want_pad_y, want_pad_x)
    if found != want:
        raise r.error(
            f"{w.note}: conv (filters, nr, nc, stride_y, stride_x, pad_y, pad_x) = {found}, expected {want}",
            at=start,
        )
    n, k, fr, fc = filters
    if (n, fr, fc) != (num_filters, nr, nc) or biases != (1, num_filters, 1, 1):
        raise r.error(f"{w.note}: inconsistent filter/bias shapes {filters} / {biases}", at=start)
    if params.size != n * k * fr * fc + n:
        raise r.error(
            f"{w.note}: params has {params.size} values, filters+biases need {n * k * fr * fc + n}", at=start
        )
    weight = params[: n * k * fr * fc].reshape(n, k, fr, fc).copy()
    bias = params[n * k * fr * fc :].copy()
    return ConvParams(weight=weight, bias=bias, stride=stride_y, padding=pad_y)


def _read_bn_as_affine(r: DlibReader, w: LayerSpec, start: int) -> AffineParams:
    """A stored ``bn_con2`` layer, converted the way dlib's ``affine_(const bn_&)`` does."""
    params = r.read_tensor("bn params").reshape(-1)
    gamma_shape = r.read_alias_tensor("bn gamma")
    beta_shape = r.read_alias_tensor("bn beta")
    for name in ("means", "invstds"):
        r.read_tensor(f"bn {name}")
    running_means = r.read_tensor("bn running_means").reshape(-1)
    running_vars = r.read_tensor("bn running_variances").reshape(-1)
    r.read_uint("bn num_updates")
    r.read_uint("bn running_stats_window_size")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.read_float(f"bn {name}")
    eps = r.read_float("bn eps")
    c = gamma_shape[1]
    if (
        gamma_shape != (1, c, 1, 1)
        or beta_shape != gamma_shape
        or params.size != 2 * c
        or running_means.size != c
        or running_vars.size != c
    ):
        raise r.error(
            f"{w.note}: inconsistent bn_con2 shapes (gamma {gamma_shape}, params {params.size}, "
            f"running stats {running_means.size}/{running_vars.size})",
            at=start,
        )
    g = (params[:c] / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
    b = (params[c:] - g * running_means).astype(np.float32)
    return AffineParams(gamma=g, beta=b, source="bn_con2")


def _read_affine(r: DlibReader, w: LayerSpec) -> AffineParams:
    start = r.pos
    # dlib's affine_ also accepts a serialized bn_con2 and converts it with its running statistics.
    tag = r.expect_string(("affine_", "bn_con2"), f"layer tag for {w.note}")
    if tag == "bn_con2":
        return _read_bn_as_affine(r, w, start)
    params = r.read_tensor(f"{w.note} params").reshape(-1)
    gamma_shape = r.read_alias_tensor("gamma")
    beta_shape = r.read_alias_tensor("beta")
    mode = r.read_int("layer mode")
    c = gamma_shape[1]
    if mode != _CONV_MODE:
        raise r.error(f"{w.note}: affine layer mode {mode}, expected CONV_MODE (0)", at=start)
    if gamma_shape != (1, c, 1, 1) or beta_shape != gamma_shape or params.size != 2 * c:
        raise r.error(
            f"{w.note}: inconsistent affine shapes (gamma {gamma_shape}, beta {beta_shape}, "
            f"params {params.size})",
            at=start,
        )
    return AffineParams(gamma=params[:c].copy(), beta=params[c:].copy())


def _read_pool(r: DlibReader, w: LayerSpec, tag: str) -> None:
    start = r.pos
    r.expect_string(tag, f"layer tag for {w.note}")
    nr, nc = r.read_int("nr"), r.read_int("nc")
    sy, sx = r.read_int("stride_y"), r.read_int("stride_x")
    py, px = r.read_int("padding_y"), r.read_int("padding_x")
    want_nr, want_nc, want_sy, want_sx = w.args
    # Same default-padding rule as con_: strided pools have no padding.
    want = (
        want_nr,
        want_nc,
        want_sy,
        want_sx,
        0 if want_sy != 1 else want_nr // 2,
        0 if want_sx != 1 else want_nc // 2,
    )
    if (nr, nc, sy, sx, py, px) != want:
        found = (nr, nc, sy, sx, py, px)
        raise r.error(
            f"{w.note}: pool (nr, nc, stride_y, stride_x, pad_y, pad_x) = {found}, expected {want}", at=start
        )


def _read_fc(r: DlibReader, w: LayerSpec) -> np.ndarray:
    start = r.pos
    r.expect_string("fc_2", f"layer tag for {w.note}")
    num_outputs = r.read_uint("num_outputs")
    num_inputs = r.read_uint("num_inputs")
    params = r.read_tensor("fc params").reshape(-1)
    weights_shape = r.read_alias_tensor("fc weights")
    r.read_alias_tensor("fc biases")
    bias_mode = r.read_int("fc bias mode")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.read_float(f"fc {name}")
    if num_outputs != w.args[0] or bias_mode != _FC_NO_BIAS:
        raise r.error(
            f"{w.note}: fc with {num_outputs} outputs and bias mode {bias_mode}, expected "
            f"{w.args[0]} outputs without bias (mode {_FC_NO_BIAS})",
            at=start,
        )
    if weights_shape != (num_inputs, num_outputs, 1, 1) or params.size != num_inputs * num_outputs:
        raise r.error(
            f"{w.note}: fc weights {weights_shape} / {params.size} values do not match "
            f"{num_inputs}x{num_outputs}",
            at=start,
        )
    # dlib computes output = input @ W with W row-major [num_inputs, num_outputs]; torch wants W^T.
    return params.reshape(num_inputs, num_outputs).T.copy()


def _read_layer_trailer(r: DlibReader, w: LayerSpec, version: int) -> None:
    """The add_layer fields after the details: setup/stale/disabled flags and scratch tensors (ignored)."""
    for name in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        r.read_bool(f"{w.note} {name}")
    r.read_tensor(f"{w.note} x_grad")
    r.read_tensor(f"{w.note} cached_output")
    if w.kind == "input_layer":
        r.read_tensor(f"{w.note} grad_final")
        if version >= 3:
            r.read_uint(f"{w.note} sample_expansion_factor")
    else:
        r.read_tensor(f"{w.note} params_grad")


def _read_dat(path: str | os.PathLike) -> tuple[bytes, str]:
    """(the file's bytes, its name for error messages); an unreadable file is a :class:`DlibFormatError`."""
    path = Path(path)
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise DlibFormatError(f"{path}: cannot read dlib model file ({err})") from err


def read_face_resnet(path: str | os.PathLike) -> FaceResNetWeights:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (or a file of the same network) into numpy arrays.

    Raises :class:`DlibFormatError` (a ``ValueError``) naming the file, the byte offset and the mismatch when
    the file is truncated, corrupt, has trailing bytes, or holds a different network.
    """
    return parse_face_resnet(*_read_dat(path))


def parse_face_resnet(data: bytes, name: str = "<bytes>") -> FaceResNetWeights:
    """:func:`read_face_resnet` on bytes already in memory."""
    r = DlibReader(data, name)
    r.expect_int(1, "add_loss_layer serialization version (first bytes of the file)")
    r.expect_string("loss_metric_2", "loss layer tag")
    margin = r.read_float("loss_metric margin")
    threshold = r.read_float("loss_metric distance threshold")

    stack = face_resnet_layer_stack()
    versions = []
    for w in stack:
        versions.append(
            r.expect_int(w.versions, f"serialization version of {w.kind} '{w.detail or w.kind}' ({w.note})")
        )

    r.expect_string("input_rgb_image_sized", "input layer tag")
    mean = tuple(r.read_float(f"input avg_{c}") for c in ("red", "green", "blue"))
    size = (r.read_uint("input rows"), r.read_uint("input cols"))
    if size != (150, 150):
        raise r.error(f"input layer is sized {size}, expected (150, 150)")
    if not all(math.isfinite(m) and 0.0 <= m <= 255.0 for m in mean):
        raise r.error(f"input channel means {mean} are not in 0..255")

    convs: list[ConvParams] = []
    affines: list[AffineParams] = []
    fc_weight = None
    # Details come innermost (first computed) first: walk the stack backwards; tag/skip have no details.
    for w, version in zip(reversed(stack), reversed(versions), strict=True):
        if w.kind in ("tag", "skip"):
            continue
        if w.detail == "con":
            convs.append(_read_con(r, w))
        elif w.detail == "affine":
            affines.append(_read_affine(r, w))
        elif w.detail == "relu":
            r.expect_string("relu_", f"layer tag for {w.note}")
        elif w.detail == "add_prev":
            r.expect_string("add_prev_", f"layer tag for {w.note}")
        elif w.detail == "max_pool":
            _read_pool(r, w, "max_pool_2")
        elif w.detail == "avg_pool":
            _read_pool(r, w, "avg_pool_2")
        elif w.detail == "fc":
            fc_weight = _read_fc(r, w)
        else:  # pragma: no cover - the stack above only uses the kinds handled here
            raise AssertionError(w.detail)
        _read_layer_trailer(r, w, version)
    if r.remaining:
        raise r.error(f"{r.remaining} unexpected bytes after the end of the network")

    for i, a in enumerate(affines):
        if not (np.isfinite(a.gamma).all() and np.isfinite(a.beta).all()):
            raise DlibFormatError(f"{name}: affine layer {i} has non-finite parameters (corrupt file?)")
    for i, c in enumerate(convs):
        if not (np.isfinite(c.weight).all() and np.isfinite(c.bias).all()):
            raise DlibFormatError(f"{name}: conv layer {i} has non-finite parameters (corrupt file?)")
    assert fc_weight is not None
    if not np.isfinite(fc_weight).all():
        raise DlibFormatError(f"{name}: fc layer has non-finite parameters (corrupt file?)")

    blocks = []
    downs = [down and i == 0 for _, count, down in FACE_RESNET_LEVELS for i in range(count)]
    for j, down in enumerate(downs):
        c1, c2 = convs[1 + 2 * j], convs[2 + 2 * j]
        a1, a2 = affines[1 + 2 * j], affines[2 + 2 * j]
        blocks.append(ResBlockWeights(conv1=c1, affine1=a1, conv2=c2, affine2=a2, downsample=down))
    _check_channels(name, convs[0], affines[0], blocks, fc_weight)
    return FaceResNetWeights(
        input_mean=mean,  # type: ignore[arg-type]
        input_size=size,
        stem_conv=convs[0],
        stem_affine=affines[0],
        blocks=blocks,
        fc_weight=fc_weight,
        loss_margin=margin,
        loss_distance_threshold=threshold,
        source=name,
    )


def _check_channels(
    name: str, stem: ConvParams, stem_affine: AffineParams, blocks: list[ResBlockWeights], fc: np.ndarray
) -> None:
    """Each conv must consume the channels that reach it, and each affine must match its conv."""

    def check(what: str, conv: ConvParams, affine: AffineParams, in_ch: int) -> int:
        out_ch, k = conv.weight.shape[:2]
        if k != in_ch:
            raise DlibFormatError(f"{name}: {what} expects {k} input channels, but {in_ch} reach it")
        if affine.gamma.shape != (out_ch,):
            raise DlibFormatError(
                f"{name}: affine after {what} has {affine.gamma.shape[0]} channels, the conv gives {out_ch}"
            )
        return out_ch

    ch = check("stem conv", stem, stem_affine, 3)
    for i, b in enumerate(blocks):
        mid = check(f"block {i} conv 1", b.conv1, b.affine1, ch)
        out = check(f"block {i} conv 2", b.conv2, b.affine2, mid)
        ch = max(ch, out)  # add_prev zero-pads the narrower operand (dlib quirk), so channels never shrink
    if fc.shape[1] != ch:
        raise DlibFormatError(f"{name}: fc expects {fc.shape[1]} inputs, the network gives {ch}")


# ----------------------------------------------------------------------------------------------------------
# The shape predictor (dlib's ``shape_predictor``: a cascade of regression-tree forests)


@dataclass(frozen=True)
class ShapePredictorWeights:
    """A dlib ``shape_predictor`` as arrays: ``C`` cascades of ``T`` trees of depth ``log2(L)``, ``F``
    feature pixels per cascade, ``P`` parts.

    ``initial_shape [P, 2]`` (x, y in the unit face box), ``anchor [C, F]`` (the part each feature pixel is
    placed relative to), ``deltas [C, F, 2]`` (its offset from that part in the initial shape),
    ``split_pixels [C, T, L-1, 2]`` (the two feature pixels a split node compares), ``thresholds
    [C, T, L-1]``, ``leaves [C, T, L, P, 2]`` (shape increments); nodes in dlib's breadth-first order
    (children of ``i`` are ``2i+1``, ``2i+2``).
    """

    initial_shape: np.ndarray
    anchor: np.ndarray
    deltas: np.ndarray
    split_pixels: np.ndarray
    thresholds: np.ndarray
    leaves: np.ndarray

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])


class _Tokens:
    """The file as dlib integers. Every value in a shape predictor file is one (floats are two: mantissa
    and exponent), so the file is tokenised once and read with array slices."""

    def __init__(self, data: bytes, name: str) -> None:
        self.name, self.size = name, len(data)
        raw = np.frombuffer(data, np.uint8)
        starts, pos, end = [], 0, len(data)
        while pos < end:  # a token is one control byte and (control & 0x0F) payload bytes
            starts.append(pos)
            pos += 1 + (data[pos] & 0x0F)
        self.starts = np.asarray(starts, np.int64)
        control = raw[self.starts] if len(starts) else np.zeros(0, np.uint8)
        size = (control & 0x0F).astype(np.int64)
        bad = np.flatnonzero((control & 0x70 != 0) | (size == 0) | (size > 8))
        if len(bad):
            raise self.error(f"bad integer control byte 0x{control[bad[0]]:02x}", bad[0])
        if pos != end:
            raise self.error("file ends inside an integer (truncated or corrupt download?)", len(starts) - 1)
        magnitude = np.zeros(len(starts), np.uint64)
        for k in range(8):
            present = size > k
            byte = raw[np.minimum(self.starts + 1 + k, end - 1)].astype(np.uint64)
            magnitude |= np.where(present, byte, 0).astype(np.uint64) << np.uint64(8 * k)
        if (magnitude >= np.uint64(1 << 63)).any():
            raise self.error("integer beyond 63 bits", int(np.argmax(magnitude >= np.uint64(1 << 63))))
        self.negative = (control & 0x80) != 0
        self.values = np.where(self.negative, -magnitude.astype(np.int64), magnitude.astype(np.int64))
        self.i = 0

    def error(self, what: str, token: int | None = None) -> DlibFormatError:
        token = self.i if token is None else token
        at = int(self.starts[token]) if 0 <= token < len(self.starts) else self.size
        return DlibFormatError(f"{self.name}: not a valid dlib shape predictor file: {what} (at byte {at})")

    def take(self, n: int, what: str) -> np.ndarray:
        if self.i + n > len(self.values):
            raise self.error(f"file ends while reading {what} (truncated or corrupt download?)")
        out = self.values[self.i : self.i + n]
        self.i += n
        return out

    def count(self, what: str, limit: int = 1 << 24) -> int:
        (n,) = self.take(1, what)
        if not 0 <= n <= limit:
            raise self.error(f"{what} = {n} is out of range", self.i - 1)
        return int(n)

    def expect(self, values: np.ndarray, expected: int, what: str) -> None:
        wrong = np.flatnonzero(values != expected)
        if len(wrong):
            token = self.i - len(values) + int(wrong[0])
            raise self.error(f"expected {what} = {expected}, found {values[wrong[0]]}", token)

    def expect_rows(self, block: np.ndarray, start: int, expected: dict[int, int], what: str) -> None:
        """``block [n, width]`` taken from token ``start``: column ``j`` must hold ``expected[j]``."""
        for col, value in expected.items():
            wrong = np.flatnonzero(block[:, col] != value)
            if len(wrong):
                token = start + int(wrong[0]) * block.shape[1] + col
                raise self.error(f"expected {what} {value}, found {block[wrong[0], col]}", token)

    def floats(self, n: int, what: str) -> np.ndarray:
        pairs = self.take(2 * n, what).reshape(n, 2)
        return self.as_floats(pairs, what)

    def as_floats(self, pairs: np.ndarray, what: str) -> np.ndarray:
        """``[..., 2]`` (mantissa, exponent) token pairs -> float32 values (non-finite values refused)."""
        exponent = pairs[..., 1]
        if (np.abs(exponent) >= _FLOAT_INF).any():
            raise self.error(f"{what} holds a non-finite value")
        return np.ldexp(pairs[..., 0].astype(np.float64), exponent.astype(np.int32)).astype(np.float32)


def read_shape_predictor(path: str | os.PathLike) -> ShapePredictorWeights:
    """Parse a dlib ``shape_predictor`` ``.dat`` file (e.g. ``shape_predictor_5_face_landmarks.dat``).

    dlib writes: version 1; the initial shape (a column matrix: ``-rows``, ``-cols``, values); the forests
    (a vector of cascades, each a vector of trees; a tree = its splits ``(idx1, idx2, threshold)`` and its
    leaf matrices); the anchor indices; the deltas (``(x, y)`` float pairs). Raises
    :class:`DlibFormatError` naming the file and byte offset when the file is truncated, corrupt or holds
    something else (the face-recognition network, say); trees must be complete binary trees of one depth.
    """
    return parse_shape_predictor(*_read_dat(path))


def parse_shape_predictor(data: bytes, name: str = "<bytes>") -> ShapePredictorWeights:
    """:func:`read_shape_predictor` on bytes already in memory."""
    t = _Tokens(data, name)
    t.expect(t.take(1, "serialization version"), 1, "shape_predictor serialization version")

    def column(what: str) -> np.ndarray:
        rows, cols = t.take(2, f"{what} dimensions")
        if rows >= 0 or cols != -1:
            raise t.error(f"{what}: expected a column matrix (dims -n, -1), found ({rows}, {cols})", t.i - 2)
        return t.floats(int(-rows), what)

    initial = column("initial shape")
    if len(initial) == 0 or len(initial) % 2:
        raise t.error(f"initial shape has {len(initial)} values (expected 2 per part)")
    n_coords = len(initial)

    n_cascades = t.count("number of cascades", 1 << 10)
    if n_cascades == 0:
        raise t.error("a shape predictor without cascades", t.i - 1)
    splits, thresholds, leaves = [], [], []
    n_splits = n_leaves = n_trees = None
    for c in range(n_cascades):
        trees = t.count(f"number of trees in cascade {c}")
        if n_trees is None:  # the first tree fixes the layout: full binary trees of one depth
            n_trees, n_splits = trees, int(t.values[t.i])
            n_leaves = n_splits + 1
            if n_trees == 0 or not 0 < n_splits < 1 << 16 or n_leaves & (n_leaves - 1):
                raise t.error(f"{n_trees} trees of {n_splits} splits: not complete binary trees", t.i)
        elif trees != n_trees:
            raise t.error(f"cascades of different sizes ({n_trees} and {trees} trees)", t.i - 1)
        # one tree: n_splits, (idx1, idx2, mantissa, exponent) per split, n_leaves, (-rows, -1, values) per leaf
        leaf_len = 2 + 2 * n_coords
        tree_len = 2 + 4 * n_splits + n_leaves * leaf_len
        start = t.i
        block = t.take(n_trees * tree_len, f"the trees of cascade {c}").reshape(n_trees, tree_len)
        t.expect_rows(block, start, {0: n_splits, 1 + 4 * n_splits: n_leaves}, "tree size")
        triples = block[:, 1 : 1 + 4 * n_splits].reshape(n_trees, n_splits, 4)
        if (triples[..., :2] < 0).any():
            raise t.error(f"negative feature index in a split of cascade {c}", start)
        leaf = block[:, 2 + 4 * n_splits :].reshape(n_trees, n_leaves, leaf_len)
        for col, value in ((0, -n_coords), (1, -1)):
            wrong = np.argwhere(leaf[..., col] != value)
            if len(wrong):
                tree, j = (int(v) for v in wrong[0])
                token = start + tree * tree_len + 2 + 4 * n_splits + j * leaf_len + col
                raise t.error(f"expected leaf matrix dims {value}, found {leaf[tree, j, col]}", token)
        splits.append(triples[..., :2])
        thresholds.append(t.as_floats(triples[..., 2:], "split threshold"))
        leaves.append(t.as_floats(leaf[..., 2:].reshape(n_trees, n_leaves, n_coords, 2), "leaf value"))

    def per_cascade(what: str) -> int:
        n = t.count(f"number of {what} lists")
        if n != n_cascades:
            raise t.error(f"{n} {what} lists for {n_cascades} cascades", t.i - 1)
        return n

    anchor = []
    for _ in range(per_cascade("anchor")):
        idx = t.take(t.count("number of feature pixels"), "anchor indices")
        if ((idx < 0) | (idx >= n_coords // 2)).any():
            raise t.error("anchor index beyond the shape's parts")
        anchor.append(idx)
    deltas = [
        t.floats(2 * t.count("number of deltas"), "deltas").reshape(-1, 2)
        for _ in range(per_cascade("delta"))
    ]
    if t.i != len(t.values):
        raise t.error(f"{len(t.values) - t.i} unexpected trailing values after the shape predictor")
    n_pixels = {len(a) for a in anchor} | {len(d) for d in deltas}
    if len(n_pixels) != 1:
        raise t.error(f"cascades with different numbers of feature pixels {sorted(n_pixels)}")
    (n_pix,) = n_pixels
    split_pixels = np.stack(splits)
    if (split_pixels >= n_pix).any():
        raise t.error(f"a split compares feature pixel {split_pixels.max()}, only {n_pix} exist")
    return ShapePredictorWeights(
        initial_shape=initial.reshape(-1, 2),
        anchor=np.stack(anchor),
        deltas=np.stack(deltas).astype(np.float32),
        split_pixels=split_pixels,
        thresholds=np.stack(thresholds),
        leaves=np.stack(leaves).reshape(n_cascades, n_trees, n_leaves, n_coords // 2, 2),
    )
