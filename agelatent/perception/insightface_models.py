"""The paper-grade world's perception: insightface's ArcFace recognition and genderage networks.

Both networks come from local ONNX files (insightface model packs, e.g. ``buffalo_l`` holds ``w600k_r50.onnx``
and ``genderage.onnx``) and are loaded with ``insightface.model_zoo.get_model(path, providers=...)``, never
``FaceAnalysis(name=...)`` (which downloads). insightface routes a file by its input shape; we check that the
recognition file became an ``ArcFaceONNX`` and the genderage file an ``Attribute`` with three outputs, and take
the preprocessing constants (``input_mean``, ``input_std``) from the objects insightface built, because
insightface decides them per file from the graph's first node names (PyTorch exports: 127.5/127.5 for ArcFace,
127.5/128 for attributes; MXNet exports such as genderage.onnx, which normalise inside: 0/1).

Generated faces are FFHQ-aligned, so a fixed alignment replaces insightface's detector:

* ArcFace: the canonical FFHQ five points (:data:`FFHQ_LANDMARKS_1024`, scaled to the generator's resolution)
  are mapped onto insightface's ArcFace template (:data:`ARCFACE_TEMPLATE_112`) by the least-squares
  similarity transform, exactly as ``insightface.utils.face_align.norm_crop`` does with detected landmarks.
* genderage: ``Attribute.get`` crops a square of 1.5x the detector box's longer side around the box centre
  (``face_align.transform``); we use a canonical FFHQ face box (:data:`FFHQ_FACE_BOX_1024`).

Both warps are one batched ``affine_grid``/``grid_sample`` in torch (bilinear, zero border: what
``cv2.warpAffine`` does), differentiable w.r.t. the images. Then, as ``cv2.dnn.blobFromImages(chips,
1/input_std, size, (input_mean,)*3, swapRB=True)`` in ``ArcFaceONNX.get_feat`` / ``Attribute.get``: the
networks see RGB (insightface swaps its BGR images), ``(pixel - input_mean) / input_std``. Like insightface we
run the networks on the 0..255 pixel scale; unlike a uint8 pipeline we do not round or clip (that would cut
gradients), so out-of-range generator pixels pass through.

Outputs (``FaceScores``): the ArcFace embedding L2-normalised (insightface's ``Face.normed_embedding``);
age in years ``out[:, 2] * 100`` kept continuous (insightface rounds it); P(male) =
``softmax(out[:, :2])[:, 1]`` (insightface takes the argmax, 1 = male, ``Face.sex``). The two gender logits
are a two-way classifier's, so the softmax is the probability that argmax reports the side of.

Runtimes: ``"onnxruntime"`` uses the session insightface built (CUDA execution provider with I/O binding
when the images are on a GPU: tensors never leave the device; a plain ``run`` on CPU); not differentiable.
``"torch"`` converts the graphs with onnx2torch (frozen, differentiable, on any torch device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from agelatent import geometry
from agelatent.perception.base import FaceScores, Perception, check_finite
from agelatent.perception.onnx_models import (
    RUNTIMES,
    OnnxRunner,
    OnnxSignature,
    TorchRunner,
    check_signature,
)
from agelatent.perception.robust import RobustReading

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FFHQ_FACE_BOX_1024",
    "FFHQ_LANDMARKS_1024",
    "GENDERAGE_BOX_EXPANSION",
    "GENDERAGE_KEY",
    "INSIGHTFACE_AGE_RANGE",
    "INSIGHTFACE_SAME_PERSON_COSINE",
    "RECOGNITION_KEY",
    "InsightFacePerception",
    "arcface_alignment_matrix",
    "genderage_crop_matrix",
    "warp_affine",
]

RECOGNITION_KEY = "perception.recognition_path"
GENDERAGE_KEY = "perception.genderage_path"

# --- Geometry constants -------------------------------------------------------------------------------------
#: insightface's ArcFace template for a 112x112 chip (``insightface/utils/face_align.py``, ``arcface_dst``):
#: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right), pixel coordinates.
ARCFACE_TEMPLATE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

#: Where the five points of an FFHQ-aligned face sit in its 1024x1024 image (same order as the template).
#: Source: the mean RetinaFace five points of FFHQ-aligned faces that face-restoration tools align to
#: (xinntao/facexlib ``FaceRestoreHelper.face_template`` for 512x512, used by GFPGAN and CodeFormer), times 2.
#: RetinaFace/SCRFD points are what insightface's detector gives ``norm_crop``, so this is the landmark
#: definition the ArcFace template expects. Cross-check against NVlabs' FFHQ alignment
#: (``ffhq-dataset/download_ffhq.py``: quad centre = eye midpoint + 0.1 * eye-to-mouth at the image centre,
#: half-width max(2 * eye distance, 1.8 * eye-to-mouth) = 512 px): fed to that procedure these points give a
#: half-width of 503.7 px and a centre at (512.1, 506.4), i.e. they are an FFHQ-aligned face to within 2%
#: (tests/test_insightface.py checks this).
FFHQ_LANDMARKS_1024: tuple[tuple[float, float], ...] = (
    (385.96276, 479.89416),
    (637.80554, 480.38720),
    (513.26832, 628.03870),
    (402.52234, 742.82086),
    (626.17810, 742.30236),
)

#: Canonical detector box (x0, y0, x1, y1) of an FFHQ-aligned face at 1024 px, used only for the genderage
#: crop (``Attribute.get`` crops from insightface's detector box). An estimate, not a measurement (the
#: detector's weights are not available here): with m = eye-line-to-mouth-line distance (262.4 px) and
#: e = eye distance (251.8 px) from :data:`FFHQ_LANDMARKS_1024`, the box runs from 1.25 m above the eye line to
#: 0.65 m below the mouth line (hairline to chin: the proportions of an insightface detection reported with its
#: five points) and 2.1 e wide around the face's axis. Only its centre and longer side matter (the crop is a
#: square of 1.5x the longer side). Override ``perception.face_box_1024`` with a measured box (e.g. the mean
#: ``det_10g`` box on real FFHQ images) when you have one.
FFHQ_FACE_BOX_1024: tuple[float, float, float, float] = (247.0, 152.0, 777.0, 913.0)

#: ``Attribute.get``: scale = input_size / (max(w, h) * 1.5).
GENDERAGE_BOX_EXPANSION = 1.5

#: Cosine similarity at or above which insightface's own recognition demo for buffalo_l (w600k_r50) says
#: "They ARE the same person" (deepinsight/insightface ``web-demos/src_recognition/main.py``: < 0.2 not the same,
#: 0.2-0.28 likely the same, >= 0.28 the same).
INSIGHTFACE_SAME_PERSON_COSINE = 0.28
ARCFACE_EMBEDDING_DIM = 512  # the recognition model's output width

#: Ages in years genderage predicts: its third output is age / 100 (``Attribute.get`` reports
#: ``round(out[2] * 100)``), i.e. a 0..100-year scale. It is a linear output, not clamped to that scale.
INSIGHTFACE_AGE_RANGE: tuple[float, float] = (0.0, 100.0)

_FFHQ_RESOLUTION = 1024
_GENDERAGE_OUTPUTS = 3  # out[0:2] gender logits (female, male), out[2] age / 100


# --- Geometry -----------------------------------------------------------------------------------------------
def _from_1024(points: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel coordinates at 1024 px -> at ``resolution`` px (pixel centres stay pixel centres)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * (resolution / _FFHQ_RESOLUTION) - 0.5


def arcface_alignment_matrix(
    resolution: int, chip_size: int = 112, landmarks_1024: Sequence[Sequence[float]] = FFHQ_LANDMARKS_1024
) -> np.ndarray:
    """2x3 matrix, source pixels -> chip pixels, of ``norm_crop(img, landmarks, chip_size)`` for a fixed face.

    The template is scaled as ``face_align.estimate_norm`` does: by ``chip_size / 112`` for multiples of 112,
    else by ``chip_size / 128`` and shifted 8 * ratio px right (multiples of 128).
    """
    if chip_size % 112 == 0:
        ratio, shift_x = chip_size / 112.0, 0.0
    elif chip_size % 128 == 0:
        ratio = chip_size / 128.0
        shift_x = 8.0 * ratio
    else:
        raise ValueError(f"ArcFace chip size must be a multiple of 112 or 128 (insightface), got {chip_size}")
    template = np.asarray(ARCFACE_TEMPLATE_112, dtype=np.float64) * ratio
    template[:, 0] += shift_x
    return geometry.similarity_matrix(_from_1024(landmarks_1024, resolution), template)


def genderage_crop_matrix(
    resolution: int, chip_size: int = 96, face_box_1024: Sequence[float] = FFHQ_FACE_BOX_1024
) -> np.ndarray:
    """2x3 matrix, source pixels -> chip pixels, of ``Attribute.get`` for a fixed face box (no rotation)."""
    x0, y0, x1, y1 = _from_1024(np.asarray(face_box_1024, dtype=np.float64).reshape(2, 2), resolution).ravel()
    scale = chip_size / (max(x1 - x0, y1 - y0) * GENDERAGE_BOX_EXPANSION)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = chip_size / 2.0
    return np.array([[scale, 0.0, half - cx * scale], [0.0, scale, half - cy * scale]])


def warp_affine(images: torch.Tensor, matrix: np.ndarray, chip_size: int) -> torch.Tensor:
    """Batched, differentiable ``cv2.warpAffine(img, matrix, (chip_size, chip_size), borderValue=0)``:
    ``images`` ``[B, C, H, W]``, ``matrix`` one 2x3 source->chip pixel map for the whole batch. Bilinear, zeros
    outside the image (:func:`agelatent.geometry.warp_affine`; cv2 quantises source positions to 1/32 px, we
    do not)."""
    chip_to_source = np.linalg.inv(np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]]))[:2]
    return geometry.warp_affine(images, chip_to_source, (chip_size, chip_size))


# --- Loading ------------------------------------------------------------------------------------------------
_WHERE_TO_GET = (
    "agelatent never downloads insightface weights: get an insightface model pack (insightface's python-package "
    "model zoo; e.g. buffalo_l.zip holds w600k_r50.onnx and genderage.onnx), unzip it locally and set "
    f"{RECOGNITION_KEY} / {GENDERAGE_KEY} to the .onnx files (the models are for non-commercial research only)"
)


def _import_insightface_model_zoo():
    try:
        from insightface import model_zoo
    except ImportError as err:
        raise ImportError(
            f"the insightface perception needs the insightface package ({err}); install it with "
            "`pip install '.[insightface]'`"
        ) from err
    return model_zoo


def _require_file(path: str | Path | None, key: str) -> Path:
    if path is None or str(path).strip() == "":
        raise ValueError(f"{key} is not set; {_WHERE_TO_GET}")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{key}={path}: no such file; {_WHERE_TO_GET}")
    if resolved.suffix != ".onnx":
        # get_model treats any other name as a model-pack name under ~/.insightface, not as this file.
        raise ValueError(f"{key}={path}: expected an .onnx file (insightface loads files by that suffix)")
    return resolved


def _describe_io(model: onnx.ModelProto) -> str:
    """``inputs [...] -> outputs [...]`` with shapes, for error messages."""

    def one(value: onnx.ValueInfoProto) -> str:
        ttype = value.type.tensor_type
        dims = [
            str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim
        ]
        return f"{value.name!r} [{', '.join(dims)}]"

    weights = {t.name for t in model.graph.initializer}
    inputs = [one(v) for v in model.graph.input if v.name not in weights] or ["none"]
    outputs = [one(v) for v in model.graph.output] or ["none"]
    return f"inputs {', '.join(inputs)} -> outputs {', '.join(outputs)}"


def _provider_name(provider: Any) -> str:
    return provider if isinstance(provider, str) else str(provider[0])


def _resolve_providers(providers: Sequence[Any] | None) -> list[Any]:
    """Explicit onnxruntime providers (strings or ``[name, options]`` pairs); None = CUDA if offered, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        preferred = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        return preferred or list(available)
    resolved = [p if isinstance(p, str) else (str(p[0]), dict(p[1])) for p in providers]
    missing = [_provider_name(p) for p in resolved if _provider_name(p) not in available]
    if missing:
        raise ValueError(
            f"perception.providers: {missing} not available in this onnxruntime (available: {available}); "
            "onnxruntime and onnxruntime-gpu installed together hide the CUDA provider"
        )
    return resolved


@dataclass(frozen=True)
class _Expected:
    """What one config key must point at, in insightface's terms."""

    key: str
    kind: str  # "recognition" | "genderage"
    class_name: str  # insightface.model_zoo class the router must pick
    description: str


_RECOGNITION = _Expected(
    RECOGNITION_KEY,
    "recognition",
    "ArcFaceONNX",
    "an ArcFace recognition model (e.g. w600k_r50.onnx): input [N, 3, 112, 112] -> one output [N, 512]",
)
_GENDERAGE = _Expected(
    GENDERAGE_KEY,
    "genderage",
    "Attribute",
    "insightface's genderage model (genderage.onnx): input [N, 3, 96, 96] -> one output [N, 3]",
)


@dataclass(frozen=True)
class _LoadedNet:
    """One network as insightface understood it, plus the runner we execute it with."""

    key: str
    path: Path
    runner: OnnxRunner
    input_mean: float
    input_std: float
    chip_size: int


def _route(model_zoo, path: Path, expected: _Expected, providers: list[Any], ort_threads: int, found_io: str):
    """``get_model(path, providers=...)`` and the check that it picked ``expected.class_name``.

    ``found_io`` describes the file's inputs and outputs for the error messages.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    try:
        # sess_options is honoured by insightface >= 2 and ignored by 0.7.x (which has no such argument).
        routed = model_zoo.get_model(str(path), providers=providers, sess_options=options)
    except Exception as err:  # onnxruntime/insightface raise many types for a bad file; callers want one
        raise ValueError(
            f"{expected.key}={path}: insightface.model_zoo.get_model could not load it "
            f"({type(err).__name__}: {err}); expected {expected.description}; the file has {found_io}"
        ) from err
    expected_class = getattr(model_zoo, expected.class_name)
    if routed is None or not isinstance(routed, expected_class):
        found = (
            "no model class (insightface routes by input shape and none matched)"
            if routed is None
            else f"{type(routed).__name__} (task {getattr(routed, 'taskname', '?')!r})"
        )
        raise ValueError(
            f"{expected.key}={path}: insightface routes this file to {found}, expected {expected.class_name}: "
            f"{expected.description}; the file has {found_io}"
        )
    if expected.kind == "genderage" and getattr(routed, "taskname", None) != "genderage":
        raise ValueError(
            f"{expected.key}={path}: insightface reads this file as attribute model "
            f"{routed.taskname!r}, not 'genderage'; expected {expected.description}; the file has {found_io}"
        )
    return routed


def _load_net(
    path: str | Path | None,
    expected: _Expected,
    runtime: str,
    providers: Sequence[Any] | None,
    ort_threads: int,
) -> _LoadedNet:
    model_zoo = _import_insightface_model_zoo()
    file = _require_file(path, expected.key)
    source = f"{expected.key}={file}"
    try:
        model = onnx.load(str(file))
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ValueError(
            f"{source}: not a readable ONNX model ({type(err).__name__}: {err}); expected {expected.description}"
        ) from err
    # With runtime=torch the insightface session only serves routing: keep it on the CPU.
    session_providers = (
        _resolve_providers(providers) if runtime == "onnxruntime" else ["CPUExecutionProvider"]
    )
    routed = _route(model_zoo, file, expected, session_providers, ort_threads, _describe_io(model))
    chip_size = int(routed.input_size[0])  # the router only picks these classes for square inputs
    if expected.kind == "recognition":
        outputs = ARCFACE_EMBEDDING_DIM
        try:
            arcface_alignment_matrix(_FFHQ_RESOLUTION, chip_size)
        except ValueError as err:
            raise ValueError(f"{source}: {err}; expected {expected.description}") from err
    else:
        outputs = _GENDERAGE_OUTPUTS
    signature = OnnxSignature(routed.input_name, 3, chip_size, chip_size, routed.output_names[0], outputs)
    try:
        check_signature(model, signature, source)
    except ValueError as err:
        raise ValueError(f"{err}; expected {expected.description}") from err
    if runtime == "onnxruntime":
        runner: OnnxRunner = _SessionRunner(routed.session, signature, source)
    else:
        runner = TorchRunner(model, signature, source)
    return _LoadedNet(
        key=expected.key,
        path=file,
        runner=runner,
        input_mean=float(routed.input_mean),
        input_std=float(routed.input_std),
        chip_size=chip_size,
    )


class _SessionRunner(OnnxRunner):
    """insightface's onnxruntime session behind agelatent's runner interface.

    Images on a GPU with the CUDA execution provider active: I/O binding onto the input tensor's memory and a
    preallocated torch output, so nothing goes through the host. Otherwise: a plain ``session.run``.
    """

    runtime = "onnxruntime"
    differentiable = False

    def __init__(self, session, signature: OnnxSignature, source: str) -> None:
        super().__init__(source, signature)
        self.session = session
        self.providers = tuple(session.get_providers())
        cuda_options = session.get_provider_options().get("CUDAExecutionProvider", {})
        self.cuda_device_id = int(cuda_options.get("device_id", 0))
        self.uses_cuda = "CUDAExecutionProvider" in self.providers

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.uses_cuda:
            return self._run_bound(x)
        host = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.signature.output_name], {self.signature.input_name: host})
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def _run_bound(self, x: torch.Tensor) -> torch.Tensor:
        device = torch.device("cuda", self.cuda_device_id)
        inputs = x.detach().to(device, torch.float32).contiguous()
        out = torch.empty((inputs.shape[0], self.signature.output_width), dtype=torch.float32, device=device)
        binding = self.session.io_binding()
        self._bind(binding.bind_input, self.signature.input_name, inputs)
        self._bind(binding.bind_output, self.signature.output_name, out)
        # onnxruntime computes on its own CUDA stream: the input must be complete before it reads it. The run
        # returns after onnxruntime synchronised its outputs, so `out` is ready for any torch stream.
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        return out.to(x.device)

    def _bind(self, bind, name: str, tensor: torch.Tensor) -> None:
        """``bind``: ``IOBinding.bind_input`` or ``bind_output``, onto ``tensor``'s CUDA float32 memory."""
        bind(
            name=name,
            device_type="cuda",
            device_id=self.cuda_device_id,
            element_type=np.float32,
            shape=tuple(tensor.shape),
            buffer_ptr=tensor.data_ptr(),
        )


# --- The perception module ----------------------------------------------------------------------------------
def _landmarks_array(landmarks_1024: Sequence[Sequence[float]]) -> np.ndarray:
    points = np.asarray([[float(v) for v in p] for p in landmarks_1024], dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(
            "perception.landmarks_1024: expected five finite [x, y] points (left eye, right eye, nose, left and "
            f"right mouth corner) in 1024-px FFHQ coordinates, got shape {points.shape}"
        )
    return points


def _box_array(face_box_1024: Sequence[float]) -> np.ndarray:
    box = np.asarray([float(v) for v in face_box_1024], dtype=np.float64)
    if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(
            f"perception.face_box_1024: expected [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {box.tolist()}"
        )
    return box


class InsightFacePerception(Perception):
    """insightface's ArcFace + genderage networks on FFHQ-aligned generated faces (see the module docstring).

    ``recognition_path`` / ``genderage_path``: local ONNX files (``perception.recognition_path`` /
    ``perception.genderage_path``). ``runtime``: ``"onnxruntime"`` (insightface's sessions; GPU tensors stay on
    the GPU through I/O binding) or ``"torch"`` (onnx2torch; differentiable). ``providers``: onnxruntime
    execution providers for ``runtime="onnxruntime"`` (None: CUDA when the installed onnxruntime offers it, then
    CPU). ``ort_threads``: onnxruntime intra-op threads (0: its default; honoured by insightface >= 2).
    ``landmarks_1024`` / ``face_box_1024``: the fixed alignment (defaults: :data:`FFHQ_LANDMARKS_1024`,
    :data:`FFHQ_FACE_BOX_1024`), in pixels of a 1024x1024 FFHQ-aligned image, scaled to the images' size.
    """

    age_range: ClassVar[tuple[float, float]] = INSIGHTFACE_AGE_RANGE
    identity_dim: ClassVar[int] = ARCFACE_EMBEDDING_DIM

    def __init__(
        self,
        *,
        recognition_path: str | Path | None = None,
        genderage_path: str | Path | None = None,
        runtime: str = "onnxruntime",
        providers: Sequence[Any] | None = None,
        ort_threads: int = 0,
        landmarks_1024: Sequence[Sequence[float]] | None = None,
        face_box_1024: Sequence[float] | None = None,
        robust_age: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.robust_age = RobustReading.from_config(robust_age)
        if runtime not in RUNTIMES:
            raise ValueError(f"perception.runtime must be one of {RUNTIMES}, got {runtime!r}")
        if not isinstance(ort_threads, int) or ort_threads < 0:
            raise ValueError(f"perception.ort_threads must be an int >= 0, got {ort_threads!r}")
        self.landmarks_1024 = _landmarks_array(
            FFHQ_LANDMARKS_1024 if landmarks_1024 is None else landmarks_1024
        )
        self.face_box_1024 = _box_array(FFHQ_FACE_BOX_1024 if face_box_1024 is None else face_box_1024)
        self.recognition = _load_net(recognition_path, _RECOGNITION, runtime, providers, ort_threads)
        self.genderage = _load_net(genderage_path, _GENDERAGE, runtime, providers, ort_threads)
        self.runtime = runtime
        self.same_person_similarity = INSIGHTFACE_SAME_PERSON_COSINE
        self._matrices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)
        self.eval()
        self.requires_grad_(False)

    @property
    def differentiable(self) -> bool:
        return self.recognition.runner.differentiable and self.genderage.runner.differentiable

    def _apply(self, fn, recurse=True):
        # The runners are not submodules (they wrap sessions or converted graphs); move them with the module.
        out = super()._apply(fn, recurse)
        device = self._device_probe.device
        self.recognition.runner.to(device)
        self.genderage.runner.to(device)
        return out

    # -- preprocessing ---------------------------------------------------------------------------------------
    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output ``[B, 3, S, S]`` RGB in [-1, 1] -> RGB on insightface's 0..255 scale (float32)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(
                f"images: expected square FFHQ-aligned RGB [B, 3, S, S] in [-1, 1], got {tuple(images.shape)}"
            )
        return (images.float() + 1.0) * 127.5

    def alignment_matrices(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Source->chip 2x3 pixel maps (ArcFace, genderage) for ``resolution``-px images."""
        if resolution not in self._matrices:
            self._matrices[resolution] = (
                arcface_alignment_matrix(resolution, self.recognition.chip_size, self.landmarks_1024),
                genderage_crop_matrix(resolution, self.genderage.chip_size, self.face_box_1024),
            )
        return self._matrices[resolution]

    def recognition_chips(self, images: torch.Tensor) -> torch.Tensor:
        """ArcFace-aligned chips ``[B, 3, 112, 112]``, RGB 0..255 (what ``norm_crop`` cuts)."""
        pixels = self.pixels(images)
        return warp_affine(pixels, self.alignment_matrices(pixels.shape[-1])[0], self.recognition.chip_size)

    def genderage_chips(self, images: torch.Tensor) -> torch.Tensor:
        """genderage crops ``[B, 3, 96, 96]``, RGB 0..255 (what ``Attribute.get`` cuts)."""
        pixels = self.pixels(images)
        return warp_affine(pixels, self.alignment_matrices(pixels.shape[-1])[1], self.genderage.chip_size)

    @staticmethod
    def _normalise(chips: torch.Tensor, net: _LoadedNet) -> torch.Tensor:
        # blobFromImages(chips, 1/std, size, (mean,)*3, swapRB=True) on BGR chips == this on our RGB chips.
        return (chips - net.input_mean) / net.input_std

    # -- networks --------------------------------------------------------------------------------------------
    def genderage_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The genderage network's raw output ``[B, 3]``: female logit, male logit, age / 100."""
        chips = self.genderage_chips(images)
        out = self.genderage.runner(self._normalise(chips, self.genderage))
        check_finite({"genderage outputs": out}, f"insightface's genderage network ({self.genderage.path})")
        return out

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """The ArcFace network's raw embedding ``[B, 512]`` (not normalised)."""
        chips = self.recognition_chips(images)
        raw = self.recognition.runner(self._normalise(chips, self.recognition))
        check_finite(
            {"identity embeddings": raw}, f"insightface's recognition network ({self.recognition.path})"
        )
        return raw

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        """Ages in years ``[B]`` (continuous ``out[:, 2] * 100``; skips the recognition network)."""
        return self.genderage_outputs(images)[:, 2] * 100.0

    def forward(self, images: torch.Tensor) -> FaceScores:
        genderage = self.genderage_outputs(images)
        identity = F.normalize(self.embeddings(images), dim=-1)
        return FaceScores(
            ages_years=genderage[:, 2] * 100.0,
            identity=identity,
            p_male=torch.softmax(genderage[:, :2], dim=-1)[:, 1],
        )

    @staticmethod
    def identity_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of identity embeddings (broadcasting over leading dims), insightface's metric."""
        return F.cosine_similarity(a, b, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"runtime={self.runtime!r}, recognition={str(self.recognition.path)!r}, "
            f"genderage={str(self.genderage.path)!r}"
        )
