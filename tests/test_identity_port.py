"""The PyTorch port of dlib's face-recognition ResNet against dlib-bin itself, on real faces.

Faces: the astronaut photo shipped with scikit-image (Eileen Collins) and the first faces of scikit-image's
LFW subset (25x25 grey crops, upsampled so dlib's HOG detector finds them), all detected with
``dlib.get_frontal_face_detector``, landmarked with the five-point predictor and cut with
``dlib.get_face_chip(size=150, padding=0.25)``. Same-person pairs come from augmenting a face: mirrored chip,
darker chip, and a chip re-detected in a downscaled copy of the photo.
"""

from __future__ import annotations

import itertools
import math

import dlib
import numpy as np
import pytest
import skimage.data
import torch
from skimage.transform import rescale, resize

from agelatent.ports.dlib_format import DlibFormatError, DlibReader, parse_face_resnet, read_face_resnet
from agelatent.ports.dlib_resnet import CHIP_PADDING, CHIP_SIZE, SAME_PERSON_DISTANCE, DlibFaceResNet
from agelatent.store import model_path

N_LFW_FACES = 40
MAX_DESCRIPTOR_DIFF = 0.01


@pytest.fixture(scope="module")
def resnet_path():
    return model_path("dlib_face_resnet")


@pytest.fixture(scope="module")
def port(resnet_path):
    return DlibFaceResNet.from_dat(resnet_path)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (img * 255).round().clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def faces():
    """(identity labels, [N,150,150,3] uint8 chips) of real faces and same-person augmentations."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path("shape_predictor_5")))

    def best_chip(img: np.ndarray, upsample: int) -> np.ndarray | None:
        rects, scores, _ = detector.run(img, upsample, 0.0)
        if not rects:
            return None
        rect = rects[int(np.argmax(scores))]  # astronaut: the runner-up detection is the mission patch
        return dlib.get_face_chip(img, predictor(img, rect), size=CHIP_SIZE, padding=CHIP_PADDING)

    labels, chips = [], []

    def add(label: str, chip: np.ndarray) -> None:
        assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
        labels.append(label)
        chips.append(np.ascontiguousarray(chip))

    astronaut = skimage.data.astronaut()
    chip = best_chip(astronaut, 1)
    assert chip is not None
    add("astronaut", chip)
    add("astronaut", chip[:, ::-1])  # mirrored
    add("astronaut", (chip.astype(np.float32) * 0.7).round().astype(np.uint8))  # darker
    small = _to_uint8(rescale(astronaut, 0.6, channel_axis=2, order=3))
    add("astronaut", best_chip(small, 1))  # re-detected at a different scale: different chip, same person

    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for i, face in enumerate(lfw):
        if labels.count("astronaut") + N_LFW_FACES * 2 <= len(labels):
            break
        grey = _to_uint8(resize(face, (200, 200), order=3))
        c = best_chip(np.dstack([grey] * 3), 0)
        if c is None:
            continue
        add(f"lfw{i}", c)
        add(f"lfw{i}", c[:, ::-1])
    assert len(labels) == 4 + 2 * N_LFW_FACES
    return labels, np.stack(chips)


@pytest.fixture(scope="module")
def descriptors(faces, port, resnet_path):
    """(dlib-bin's descriptors, the port's descriptors), both [N,128] float64."""
    _, chips = faces
    rec = dlib.face_recognition_model_v1(str(resnet_path))
    ref = np.array([np.asarray(rec.compute_face_descriptor(c)) for c in chips], dtype=np.float64)
    with torch.no_grad():
        x = torch.from_numpy(chips).permute(0, 3, 1, 2).float()
        ours = port(x).double().numpy()
    return ref, ours


@pytest.mark.slow
def test_descriptors_match_dlib_on_real_faces(descriptors):
    ref, ours = descriptors
    diff = np.linalg.norm(ours - ref, axis=1)
    print(
        f"\n{len(diff)} chips: descriptor L2 difference max {diff.max():.2e} mean {diff.mean():.2e}; "
        f"descriptor norms {np.linalg.norm(ref, axis=1).min():.3f}..{np.linalg.norm(ref, axis=1).max():.3f}"
    )
    assert ours.shape == ref.shape == (len(diff), 128)
    assert np.isfinite(ours).all()
    assert diff.max() <= MAX_DESCRIPTOR_DIFF, f"worst chip {diff.argmax()}: {diff.max():.4f}"


@pytest.mark.slow
def test_same_person_decisions_match_dlib(faces, descriptors):
    labels, _ = faces
    ref, ours = descriptors
    pairs = list(itertools.combinations(range(len(labels)), 2))
    d_ref = np.array([np.linalg.norm(ref[i] - ref[j]) for i, j in pairs])
    d_ours = np.array([np.linalg.norm(ours[i] - ours[j]) for i, j in pairs])
    same_ref, same_ours = d_ref < SAME_PERSON_DISTANCE, d_ours < SAME_PERSON_DISTANCE
    margin = np.abs(d_ref - SAME_PERSON_DISTANCE).min()
    print(
        f"\n{len(pairs)} pairs: dlib says {same_ref.sum()} same / {(~same_ref).sum()} different; "
        f"{(same_ref != same_ours).sum()} disagreements; max pair-distance diff "
        f"{np.abs(d_ref - d_ours).max():.2e}; closest dlib distance to the threshold {margin:.2e}"
    )
    assert same_ref.any() and (~same_ref).any(), "the face set must exercise both decisions"
    disagree = [
        (labels[i], labels[j], d_ref[k], d_ours[k])
        for k, (i, j) in enumerate(pairs)
        if same_ref[k] != same_ours[k]
    ]
    assert not disagree, disagree[:5]
    # The astronaut's augmentations must all be judged the same person (checks the chips, not the port).
    astro = [i for i, name in enumerate(labels) if name == "astronaut"]
    for i, j in itertools.combinations(astro, 2):
        assert np.linalg.norm(ours[i] - ours[j]) < SAME_PERSON_DISTANCE


@pytest.mark.gpu
def test_cuda_matches_cpu(faces, port):
    _, chips = faces
    x = torch.from_numpy(chips[:16]).permute(0, 3, 1, 2).float()
    on_gpu = DlibFaceResNet.from_dat(port.source).cuda()
    with torch.no_grad():
        diff = torch.linalg.vector_norm(port(x) - on_gpu(x.cuda()).cpu(), dim=1)
    assert diff.max() <= MAX_DESCRIPTOR_DIFF  # cuDNN may use TF32 for convs; still far inside the bound


def test_gradients_reach_the_input_and_weights_are_frozen(port):
    assert not port.training
    assert all(not p.requires_grad for p in port.parameters())
    chip = skimage.data.astronaut()[60:210, 150:300]  # any 150x150 RGB patch will do for gradients
    x = torch.from_numpy(np.ascontiguousarray(chip)).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    x.requires_grad_(True)
    out = port(x)
    assert out.shape == (2, 128)
    DlibFaceResNet.distance(out[0], out[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in port.parameters())


def test_rejects_wrong_input_shape(port):
    with pytest.raises(ValueError, match=r"\[N, 3, 150, 150\]"):
        port(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="150"):
        port(torch.zeros(1, 150, 150, 3))


# ------------------------------------------------------------------------------------------------------------
# Corrupt, truncated and foreign .dat files


@pytest.fixture(scope="module")
def dat_bytes(resnet_path):
    return resnet_path.read_bytes()


def test_reader_reads_the_real_file(dat_bytes, resnet_path):
    w = read_face_resnet(resnet_path)
    assert w.input_size == (150, 150)
    np.testing.assert_allclose(w.input_mean, (122.782, 117.001, 104.298), atol=1e-4)
    assert math.isclose(w.loss_distance_threshold, 0.6, rel_tol=1e-6)
    assert w.stem_conv.weight.shape == (32, 3, 7, 7) and (w.stem_conv.stride, w.stem_conv.padding) == (2, 0)
    assert len(w.blocks) == 14 and sum(b.downsample for b in w.blocks) == 4
    assert w.fc_weight.shape == (128, 256)


@pytest.mark.parametrize("keep", [0, 3, 200, 400, 11_000_000, -1])
def test_truncated_file_raises(dat_bytes, tmp_path, keep):
    bad = tmp_path / "truncated_model.dat"
    bad.write_bytes(dat_bytes[:keep])
    with pytest.raises(DlibFormatError, match="truncated_model.dat") as info:
        DlibFaceResNet.from_dat(bad)
    assert isinstance(info.value, ValueError)
    assert "ends while reading" in str(info.value)


def test_trailing_bytes_raise(dat_bytes):
    with pytest.raises(DlibFormatError, match="unexpected bytes after the end"):
        parse_face_resnet(dat_bytes + b"\x00", name="padded.dat")


def test_corrupted_layer_tag_raises(dat_bytes):
    pos = dat_bytes.index(b"relu_")
    bad = dat_bytes[:pos] + b"relv_" + dat_bytes[pos + 5 :]
    with pytest.raises(DlibFormatError, match=r"expected layer tag for stem relu 'relu_', found 'relv_'"):
        parse_face_resnet(bad, name="flipped.dat")


def test_corrupted_conv_shape_raises(dat_bytes):
    # The stem conv's num_filters field (integer 32 = 01 20) right after its params tensor: make it 33.
    r = DlibReader(dat_bytes)
    r.pos = dat_bytes.index(b"\x05con_4") - 1
    r.read_string()
    r.read_tensor()
    assert dat_bytes[r.pos : r.pos + 2] == b"\x01\x20"
    bad = dat_bytes[: r.pos] + b"\x01\x21" + dat_bytes[r.pos + 2 :]
    with pytest.raises(DlibFormatError, match=r"stem con<32,7,7,2,2>: conv .* = \(33, 7, 7"):
        parse_face_resnet(bad, name="reshaped.dat")


def test_foreign_dat_file_raises():
    predictor = model_path("shape_predictor_5")
    with pytest.raises(DlibFormatError, match="shape_predictor_5_face_landmarks.dat"):
        DlibFaceResNet.from_dat(predictor)


def test_missing_file_raises(tmp_path):
    with pytest.raises(DlibFormatError, match="cannot read"):
        read_face_resnet(tmp_path / "nope.dat")


# ------------------------------------------------------------------------------------------------------------
# A stored batch-norm layer (bn_con2) in place of an affine_ is converted like dlib does.


def _ser_int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def _ser_float(x: float) -> bytes:
    m, e = math.frexp(x)
    return _ser_int(int(m * (1 << 53))) + _ser_int(e - 53)


def _ser_str(s: str) -> bytes:
    return _ser_int(len(s)) + s.encode()


def _ser_tensor(a: np.ndarray, dims: tuple[int, int, int, int]) -> bytes:
    return _ser_int(2) + b"".join(map(_ser_int, dims)) + np.asarray(a, "<f4").tobytes()


def test_bn_con2_is_converted_to_affine(dat_bytes, port):
    # Locate the stem affine_ details: tag, params tensor, gamma/beta alias tensors, mode.
    r = DlibReader(dat_bytes)
    start = r.pos = dat_bytes.index(b"\x07affine_") - 1
    r.read_string()
    params = r.read_tensor().reshape(-1)
    r.read_alias_tensor()
    r.read_alias_tensor()
    r.read_int()
    end = r.pos
    c = params.size // 2
    gamma, beta = params[:c].astype(np.float64), params[c:].astype(np.float64)
    rng = np.random.default_rng(0)
    mean, var, eps = rng.normal(0, 1, c), rng.uniform(0.5, 2.0, c), 1e-5
    bn_gamma = gamma * np.sqrt(var + eps)
    bn_beta = beta + gamma * mean
    empty = _ser_tensor(np.zeros(0), (0, 0, 0, 0))
    bn = b"".join([
        _ser_str("bn_con2"),
        _ser_tensor(np.concatenate([bn_gamma, bn_beta]), (2 * c, 1, 1, 1)),
        _ser_int(1) + b"".join(map(_ser_int, (1, c, 1, 1))),
        _ser_int(1) + b"".join(map(_ser_int, (1, c, 1, 1))),
        empty, empty,  # means, invstds (training scratch)
        _ser_tensor(mean, (1, c, 1, 1)), _ser_tensor(var, (1, c, 1, 1)),
        _ser_int(1000), _ser_int(1000),
        *(_ser_float(v) for v in (1.0, 0.0, 1.0, 1.0)),
        _ser_float(eps),
    ])  # fmt: skip
    w = parse_face_resnet(dat_bytes[:start] + bn + dat_bytes[end:], name="bn.dat")
    assert w.stem_affine.source == "bn_con2"
    np.testing.assert_allclose(w.stem_affine.gamma, gamma, rtol=1e-5)
    np.testing.assert_allclose(w.stem_affine.beta, beta, rtol=1e-4, atol=1e-5)
    x = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut()[60:210, 150:300]))
    x = x.permute(2, 0, 1)[None].float()
    with torch.no_grad():
        assert torch.linalg.vector_norm(DlibFaceResNet(w)(x) - port(x)) < 1e-4
