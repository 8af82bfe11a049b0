"""The insightface perception (paper-grade world) against insightface itself, on tiny random-weight stand-ins.

The real ``w600k_r50.onnx`` / ``genderage.onnx`` cannot be fetched here, so the tests use ONNX files with the
same interfaces, written by :mod:`agelatent.testing.standins` (see its docstring for the layouts): an ArcFace
PyTorch export ``'input.1' [None, 3, 112, 112] -> '683' [None, 512]`` and genderage ``'data' [None, 3, 96, 96] ->
'fc1' [1, 3]`` both as MXNet exported it (normalising inside) and PyTorch-style. The perception reads tensor
names from the file, so nothing depends on them. Every number the perception produces is compared with what
insightface's own ``norm_crop`` + ``ArcFaceONNX.get_feat`` and ``Attribute.get`` compute on the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from insightface.app.common import Face
from insightface.model_zoo import ArcFaceONNX, Attribute, get_model
from insightface.utils import face_align

from agelatent.perception.base import FaceScores, NonFiniteScoresError
from agelatent.perception.insightface_models import (
    ARCFACE_TEMPLATE_112,
    FFHQ_FACE_BOX_1024,
    FFHQ_LANDMARKS_1024,
    GENDERAGE_KEY,
    INSIGHTFACE_SAME_PERSON_COSINE,
    RECOGNITION_KEY,
    InsightFacePerception,
    arcface_alignment_matrix,
    genderage_crop_matrix,
)
from agelatent.testing.standins import arcface_stand_in, genderage_stand_in

# insightface's estimate_norm calls skimage's deprecated SimilarityTransform.estimate.
_FILTER = pytest.mark.filterwarnings("ignore:.*estimate.*deprecated:FutureWarning")

CPU = ["CPUExecutionProvider"]


pytestmark = [_FILTER, pytest.mark.usefixtures("one_thread")]


# --- Stand-in models (agelatent.testing.standins) -------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    return {
        "arcface": arcface_stand_in(root / "w600k_r50.onnx"),
        "genderage": genderage_stand_in(root / "genderage.onnx"),
        "genderage_torch_style": genderage_stand_in(root / "genderage_pt.onnx", mxnet=False),
    }


@pytest.fixture(scope="module")
def perception(files):
    return InsightFacePerception(
        recognition_path=files["arcface"], genderage_path=files["genderage"], providers=CPU, ort_threads=1
    )


@pytest.fixture(scope="module")
def torch_perception(files):
    return InsightFacePerception(
        recognition_path=files["arcface"], genderage_path=files["genderage"], runtime="torch"
    )


def smooth_images(batch: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """Band-limited random RGB images in [-0.9, 0.9] (distinct channels, so a BGR swap shows)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 24, 24, generator=g) * 1.8 - 0.9
    up = torch.nn.functional.interpolate(
        low, size=(resolution, resolution), mode="bicubic", align_corners=False
    )
    return up.clamp(-0.9, 0.9)


def insightface_bgr(image: torch.Tensor) -> np.ndarray:
    """Our [-1, 1] RGB image as insightface takes images: HWC BGR (float32, so no uint8 rounding)."""
    return np.ascontiguousarray(((image + 1.0) * 127.5).permute(1, 2, 0).numpy()[..., ::-1], dtype=np.float32)


def canonical_points(resolution: int) -> np.ndarray:
    return (np.asarray(FFHQ_LANDMARKS_1024) + 0.5) * resolution / 1024 - 0.5


def canonical_box(resolution: int) -> np.ndarray:
    return ((np.asarray(FFHQ_FACE_BOX_1024).reshape(2, 2) + 0.5) * resolution / 1024 - 0.5).ravel()


class RecordingSession:
    """Stands in for an insightface model's session: records the blob it is fed and what the network returns."""

    def __init__(self, session):
        self.session = session
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []

    def run(self, names, feed):
        (blob,) = feed.values()
        out = self.session.run(names, feed)
        self.inputs.append(np.array(blob, copy=True))
        self.outputs.append(np.array(out[0], copy=True))
        return out


# --- Routing, geometry --------------------------------------------------------------------------------------
def test_stand_ins_route_like_the_real_files(files):
    arc = get_model(files["arcface"], providers=CPU)
    assert isinstance(arc, ArcFaceONNX)
    assert (arc.input_mean, arc.input_std, arc.input_size) == (127.5, 127.5, (112, 112))
    ga = get_model(files["genderage"], providers=CPU)
    assert isinstance(ga, Attribute) and ga.taskname == "genderage"
    assert (ga.input_mean, ga.input_std, ga.input_name) == (0.0, 1.0, "data")  # MXNet: normalises inside
    ga_pt = get_model(files["genderage_torch_style"], providers=CPU)
    assert isinstance(ga_pt, Attribute) and (ga_pt.input_mean, ga_pt.input_std) == (127.5, 128.0)


def test_template_is_insightfaces():
    np.testing.assert_array_equal(np.float32(ARCFACE_TEMPLATE_112), face_align.arcface_dst)


def _ffhq_quad(eye_left, eye_right, mouth_left, mouth_right):
    """NVlabs ffhq-dataset's alignment rectangle: centre c and half-width vector x (output: 512 px)."""
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    return eye_avg + eye_to_mouth * 0.1, x


def test_canonical_landmarks_are_an_ffhq_aligned_face():
    """FFHQ's own alignment, run on the canonical points, must (nearly) reproduce the 1024 image they sit in."""
    eye_l, eye_r, _nose, mouth_l, mouth_r = np.asarray(FFHQ_LANDMARKS_1024)
    centre, x = _ffhq_quad(eye_l, eye_r, mouth_l, mouth_r)
    assert abs(np.hypot(*x) / 512 - 1) < 0.02  # scale within 2%
    assert np.abs(centre - 512).max() < 8  # centre within 8 px of 1024
    assert abs(np.degrees(np.arctan2(x[1], x[0]))) < 0.5  # upright
    x0, y0, x1, y1 = FFHQ_FACE_BOX_1024  # the face box holds the face's five points
    assert all(x0 < px < x1 and y0 < py < y1 for px, py in FFHQ_LANDMARKS_1024)


@pytest.mark.parametrize("resolution", [256, 1024])
@pytest.mark.parametrize("chip", [112, 128, 224])
def test_alignment_matrix_is_insightfaces_estimate_norm(resolution, chip):
    ours = arcface_alignment_matrix(resolution, chip)
    theirs = face_align.estimate_norm(canonical_points(resolution).astype(np.float32), chip)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("resolution", [256, 1024])
def test_genderage_matrix_is_insightfaces_transform(resolution):
    x0, y0, x1, y1 = canonical_box(resolution)
    scale = 96 / (max(x1 - x0, y1 - y0) * 1.5)  # Attribute.get
    _, theirs = face_align.transform(
        np.zeros((8, 8, 3), np.float32), ((x0 + x1) / 2, (y0 + y1) / 2), 96, scale, 0
    )
    np.testing.assert_allclose(genderage_crop_matrix(resolution), theirs, rtol=0, atol=1e-9)


# --- Preprocessing and outputs against insightface ----------------------------------------------------------
#: Largest chip difference we accept, in gray levels (0..255). Measured: 6e-4 (ArcFace chips) and 2e-4
#: (genderage crops) on these band-limited images, from cv2 quantising sample positions to 1/32 px. A wrong
#: std (127.5 vs 128) moves chips by up to 0.5 gray levels, a BGR swap by tens: both far above this.
CHIP_TOLERANCE = 0.01


@pytest.mark.parametrize("genderage", ["genderage", "genderage_torch_style"])
@pytest.mark.parametrize("resolution", [256, 1024])
def test_preprocessing_and_outputs_match_insightface(files, genderage, resolution):
    ours = InsightFacePerception(
        recognition_path=files["arcface"], genderage_path=files[genderage], providers=CPU, ort_threads=1
    )
    arc = get_model(files["arcface"], providers=CPU)
    arc.session = RecordingSession(arc.session)
    attr = get_model(files[genderage], providers=CPU)
    attr.session = RecordingSession(attr.session)
    images = smooth_images(2, resolution, seed=resolution)

    scores = ours(images)
    raw_embeddings = ours.embeddings(images)
    genderage_out = ours.genderage_outputs(images)
    blobs_arc = ((ours.recognition_chips(images) - arc.input_mean) / arc.input_std).numpy()
    blobs_ga = ((ours.genderage_chips(images) - attr.input_mean) / attr.input_std).numpy()
    for i in range(len(images)):
        bgr = insightface_bgr(images[i])
        # ArcFace: norm_crop with the canonical landmarks, then get_feat (blobFromImages, swapRB).
        chip = face_align.norm_crop(bgr, canonical_points(resolution), 112)
        feature = arc.get_feat(chip)
        np.testing.assert_allclose(
            arc.session.inputs[-1][0], blobs_arc[i], rtol=0, atol=CHIP_TOLERANCE / arc.input_std
        )
        # The tolerance tells right from wrong: a BGR swap or std 128 would fail it.
        assert np.abs(arc.session.inputs[-1][0] - blobs_arc[i, ::-1]).max() > 100 * CHIP_TOLERANCE / 127.5
        wrong_std = blobs_arc[i] * arc.input_std / 128.0
        assert np.abs(arc.session.inputs[-1][0] - wrong_std).max() > 10 * CHIP_TOLERANCE / 127.5
        np.testing.assert_allclose(raw_embeddings[i].numpy(), feature[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            scores.identity[i].numpy(), feature[0] / np.linalg.norm(feature[0]), atol=1e-5
        )

        # genderage: Attribute.get crops 1.5x the face box around its centre, then blobFromImage (swapRB).
        face = Face(bbox=canonical_box(resolution))
        gender, age = attr.get(bgr, face)
        np.testing.assert_allclose(
            attr.session.inputs[-1][0], blobs_ga[i], rtol=0, atol=CHIP_TOLERANCE / attr.input_std
        )
        assert (
            np.abs(attr.session.inputs[-1][0] - blobs_ga[i, ::-1]).max()
            > 100 * CHIP_TOLERANCE / attr.input_std
        )
        theirs = attr.session.outputs[-1][0]
        np.testing.assert_allclose(genderage_out[i].numpy(), theirs, rtol=1e-4, atol=1e-5)
        assert scores.ages_years[i].item() == pytest.approx(theirs[2] * 100, abs=1e-3)
        assert round(scores.ages_years[i].item()) == age  # insightface rounds the same number
        assert int(scores.p_male[i].item() > 0.5) == gender  # argmax of the two logits; 1 = male
    logits = genderage_out[:, :2]
    torch.testing.assert_close(scores.p_male, torch.softmax(logits, -1)[:, 1])


def test_scores_interface(perception):
    images = smooth_images(3, 128, seed=5)
    scores = perception(images)
    assert isinstance(scores, FaceScores)
    assert (
        scores.ages_years.shape == (3,) and scores.p_male.shape == (3,) and scores.identity.shape == (3, 512)
    )
    torch.testing.assert_close(scores.identity.norm(dim=-1), torch.ones(3))
    assert ((scores.p_male > 0) & (scores.p_male < 1)).all()
    torch.testing.assert_close(perception.ages(images), scores.ages_years)
    sim = perception.identity_similarity(scores.identity[:, None], scores.identity[None])
    torch.testing.assert_close(sim.diagonal(), torch.ones(3))
    assert sim.shape == (3, 3) and (sim <= 1 + 1e-6).all()
    assert perception.same_person_similarity == INSIGHTFACE_SAME_PERSON_COSINE == 0.28
    assert not perception.differentiable
    assert InsightFacePerception.age_range == perception.age_range == (0.0, 100.0)  # age / 100 output
    with pytest.raises(ValueError, match=r"square FFHQ-aligned RGB"):
        perception(torch.zeros(1, 3, 128, 96))


# --- Runtimes -----------------------------------------------------------------------------------------------
def test_runtimes_agree(perception, torch_perception):
    images = smooth_images(4, 256, seed=7)
    a, b = perception(images), torch_perception(images)
    torch.testing.assert_close(b.identity, a.identity, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.ages_years, a.ages_years, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.p_male, a.p_male, rtol=1e-5, atol=1e-6)


def test_torch_runtime_is_differentiable_in_the_images(torch_perception):
    assert torch_perception.differentiable
    images = smooth_images(2, 256, seed=3).requires_grad_(True)
    scores = torch_perception(images)
    (scores.ages_years.sum() + scores.p_male.sum() + scores.identity[:, :8].sum()).backward()
    grad = images.grad
    assert torch.isfinite(grad).all()
    # Both crops reach the image: ArcFace's around the face, genderage's wider.
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert grad[:, :, :10, :].abs().sum() > 0  # the genderage crop reaches the top rows at this box
    assert all(p.grad is None for p in torch_perception.parameters())


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_non_finite_scores_raise(files, runtime, perception, torch_perception):
    model = perception if runtime == "onnxruntime" else torch_perception
    images = smooth_images(3, 128, seed=1)
    images[1, :, 60:70, 60:70] = float("nan")
    with pytest.raises(NonFiniteScoresError, match=r"rows \[1\]"):
        model(images)
    with pytest.raises(NonFiniteScoresError):
        model.ages(images)


# --- Errors -------------------------------------------------------------------------------------------------
def test_missing_paths_name_the_key_and_where_to_get_them(files, tmp_path):
    with pytest.raises(ValueError, match=rf"{RECOGNITION_KEY} is not set.*buffalo_l.*w600k_r50\.onnx"):
        InsightFacePerception(recognition_path=None, genderage_path=files["genderage"])
    missing = tmp_path / "nowhere" / "genderage.onnx"
    with pytest.raises(FileNotFoundError, match=rf"{GENDERAGE_KEY}=.*nowhere.*no such file.*buffalo_l"):
        InsightFacePerception(recognition_path=files["arcface"], genderage_path=missing)
    renamed = tmp_path / "w600k_r50.bin"
    renamed.write_bytes(Path(files["arcface"]).read_bytes())
    with pytest.raises(ValueError, match=rf"{RECOGNITION_KEY}=.*expected an \.onnx file"):
        InsightFacePerception(recognition_path=renamed, genderage_path=files["genderage"])


def test_wrong_files_are_named_with_what_insightface_made_of_them(files, tmp_path):
    def build(recognition=files["arcface"], genderage=files["genderage"]):
        return InsightFacePerception(recognition_path=recognition, genderage_path=genderage, providers=CPU)

    with pytest.raises(
        ValueError, match=rf"{RECOGNITION_KEY}=.*routes this file to Attribute.*expected ArcFaceONNX"
    ):
        build(recognition=files["genderage"])
    with pytest.raises(
        ValueError, match=rf"{GENDERAGE_KEY}=.*routes this file to ArcFaceONNX.*expected Attribute"
    ):
        build(genderage=files["arcface"])
    small = arcface_stand_in(tmp_path / "small.onnx", size=64)
    with pytest.raises(ValueError, match=r"no model class.*'input.1' \[None, 3, 64, 64\]"):
        build(recognition=small)
    narrow = arcface_stand_in(tmp_path / "narrow.onnx", width=128)
    with pytest.raises(ValueError, match=rf"{RECOGNITION_KEY}=.*does not match.*\[N, 512\]"):
        build(recognition=narrow)
    odd = arcface_stand_in(
        tmp_path / "odd.onnx", size=144
    )  # routed to ArcFaceONNX, but no insightface template
    with pytest.raises(ValueError, match=r"multiple of 112 or 128"):
        build(recognition=odd)
    two_way = genderage_stand_in(tmp_path / "attribute2.onnx", outputs_width=2)
    with pytest.raises(ValueError, match=rf"{GENDERAGE_KEY}=.*'attribute_2', not 'genderage'"):
        build(genderage=two_way)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(ValueError, match=rf"{RECOGNITION_KEY}=.*garbage.onnx"):
        build(recognition=garbage)
    with pytest.raises(ValueError, match=r"perception.providers.*NoSuchExecutionProvider"):
        InsightFacePerception(
            recognition_path=files["arcface"],
            genderage_path=files["genderage"],
            providers=["NoSuchExecutionProvider"],
        )


def test_config_builds_the_perception(files):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from agelatent.config import compose_config

    cfg = compose_config("sample", ["device=cpu", "perception=insightface"])
    assert cfg.perception.landmarks_1024 is None and cfg.perception.face_box_1024 is None  # the constants
    with pytest.raises(InstantiationException, match=RECOGNITION_KEY):
        instantiate(cfg.perception)
    cfg = compose_config(
        "sample",
        [
            "device=cpu",
            "perception=insightface",
            f"perception.recognition_path={files['arcface']}",
            f"perception.genderage_path={files['genderage']}",
            "perception.runtime=torch",
        ],
    )
    model = instantiate(cfg.perception)
    assert isinstance(model, InsightFacePerception) and model.differentiable
    assert model(smooth_images(1, 64)).identity.shape == (1, 512)
    np.testing.assert_array_equal(model.landmarks_1024, np.asarray(FFHQ_LANDMARKS_1024))
    np.testing.assert_array_equal(model.face_box_1024, np.asarray(FFHQ_FACE_BOX_1024))


# --- GPU ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_onnxruntime_cuda_uses_io_binding(files, perception, monkeypatch):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(
            "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu, not onnxruntime)"
        )
    gpu = InsightFacePerception(
        recognition_path=files["arcface"],
        genderage_path=files["genderage"],
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
    ).to("cuda")
    assert gpu.recognition.runner.uses_cuda and gpu.genderage.runner.uses_cuda

    def host_round_trip(*_args, **_kwargs):
        raise AssertionError("session.run called: tensors went through the host")

    for net in (gpu.recognition, gpu.genderage):
        monkeypatch.setattr(net.runner.session, "run", host_round_trip)
    images = smooth_images(4, 256, seed=11)
    on_gpu = gpu(images.cuda())
    assert on_gpu.identity.is_cuda and on_gpu.ages_years.is_cuda and on_gpu.p_male.is_cuda
    on_cpu = perception(images)
    # cuDNN may use TF32 on recent GPUs: compare loosely.
    torch.testing.assert_close(on_gpu.identity.cpu(), on_cpu.identity, rtol=1e-2, atol=2e-3)
    torch.testing.assert_close(on_gpu.ages_years.cpu(), on_cpu.ages_years, rtol=1e-2, atol=0.1)
    torch.testing.assert_close(on_gpu.p_male.cpu(), on_cpu.p_male, rtol=1e-2, atol=2e-3)


@pytest.mark.gpu
def test_torch_runtime_on_cuda(files, perception):
    gpu = InsightFacePerception(
        recognition_path=files["arcface"], genderage_path=files["genderage"], runtime="torch"
    ).to("cuda")
    images = smooth_images(4, 256, seed=12).cuda().requires_grad_(True)
    scores = gpu(images)
    assert scores.identity.is_cuda
    scores.ages_years.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    on_cpu = perception(images.detach().cpu())
    torch.testing.assert_close(scores.identity.detach().cpu(), on_cpu.identity, rtol=1e-2, atol=2e-3)
    torch.testing.assert_close(scores.ages_years.detach().cpu(), on_cpu.ages_years, rtol=1e-2, atol=0.1)
