"""Face alignment: our batched torch chips vs dlib's ``get_face_chip`` / ``get_face_chip_details``.

Real photos: the astronaut (Eileen Collins, ``skimage.data.astronaut()``; the only face photo shipped by the
installed packages) and variants that exercise every branch of dlib's extraction -- mirrored, rotated both
ways (chip angle), enlarged 1.7x (one/two pyramid levels before sampling), halved (no pyramid), and cropped
so the face touches the image border (black chip border). Each is detected with dlib's HOG detector and
landmarked with the five-point predictor. Generated faces: the DCGAN at 64x64, upsampled to 256.

Measured chip differences vs dlib (mean absolute difference, 0..255, over all photos; max over photos):
  default (float, no truncation):  150/0.25: 0.42-0.49   64/0.2: 0.43-0.98   32/0.2: 0.49-1.48
  quantize=True (dlib's uint8 truncations): 0 -- bit-exact on every photo and on 88 generated faces
The default mode's difference is dlib's truncation bias, ~0.5 gray level per truncation (one at the output,
one per pyramid level), so it grows with the pyramid depth; with the pyramid off (plain bilinear), the 32x32
chips differ by 6-10 gray levels.
"""

from __future__ import annotations

import dlib
import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

from agelatent.perception.align import (
    GENERATED_FACE_RECT,
    ChipDetails,
    FivePointLandmarker,
    _filter_down,
    _filter_down_values,
    extract_chips,
    extract_chips_upsampled,
    face_chip_details,
    rescale_landmarks,
    resize_bicubic,
)
from agelatent.photos.faces import FaceDetector
from agelatent.ports.dlib_format import DlibFormatError, parse_shape_predictor, read_shape_predictor
from agelatent.ports.shape_predictor import TorchShapePredictor
from agelatent.store import model_path

CHIP_SPECS = [(150, 0.25), (64, 0.2), (32, 0.2)]  # identity ResNet, age, gender
# default mode: measured max 0.49 / 0.98 / 1.48 (truncation bias, see module docstring)
MAD_DEFAULT = {150: 0.6, 64: 1.1, 32: 1.6}
MAD_QUANTIZED = 0.002  # measured 0 (bit-exact); the margin allows a few +-1 flips from float rounding
GEOMETRY_ATOL = 1e-9  # measured <= 1.2e-13 pixel / radian
N_GENERATED = 24


def _u8(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8))


def _photos() -> dict[str, np.ndarray]:
    base = skimage.data.astronaut()
    face_centre = (220, 130)  # (x, y), for rotations about the face
    return {
        "astronaut": base,
        "mirrored": np.ascontiguousarray(base[:, ::-1]),
        "rotated-20": _u8(skimage.transform.rotate(base, -20, center=face_centre, preserve_range=True)),
        "rotated+25": _u8(skimage.transform.rotate(base, 25, center=face_centre, preserve_range=True)),
        "enlarged-1.7": _u8(skimage.transform.rescale(base, 1.7, channel_axis=-1, preserve_range=True)),
        "halved": _u8(
            skimage.transform.rescale(base, 0.5, channel_axis=-1, preserve_range=True, anti_aliasing=True)
        ),
        "at-border": np.ascontiguousarray(base[60:300, 185:420]),
    }


def _to_nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def _dlib_shape(landmarks: np.ndarray) -> dlib.full_object_detection:
    points = [dlib.point(int(x), int(y)) for x, y in landmarks]
    return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), points)


@pytest.fixture(scope="module")
def predictor_path():
    return model_path("shape_predictor_5")


@pytest.fixture(scope="module")
def photo_faces(predictor_path) -> dict[str, tuple[np.ndarray, dlib.full_object_detection]]:
    """name -> (RGB uint8 image, dlib five-point shape of its best-scoring detection)."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path))
    faces = {}
    for name, image in _photos().items():
        rects, scores, _ = detector.run(image, 1, 0.0)
        assert len(rects), f"{name}: no face found"
        faces[name] = (image, predictor(image, rects[int(np.argmax(scores))]))
    return faces


@pytest.fixture(scope="module")
def generated() -> torch.Tensor:
    """``N_GENERATED`` DCGAN faces, 64x64, 0..255 float."""
    from agelatent.generators.dcgan import DCGANGenerator
    from agelatent.generators.latents import sample_latents

    generator = DCGANGenerator.pretrained()
    with torch.no_grad():
        return (generator(sample_latents(range(100, 100 + N_GENERATED), generator.latent_dim)) + 1) * 127.5


@pytest.fixture(scope="module")
def landmarker(predictor_path) -> FivePointLandmarker:
    return FivePointLandmarker(predictor_path)


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ geometry


def test_chip_details_match_dlib(photo_faces):
    names = list(photo_faces)
    landmarks = np.stack([_points(photo_faces[n][1]) for n in names])
    for size, padding in CHIP_SPECS:
        ours = face_chip_details(landmarks, size, padding)  # the whole batch at once
        assert isinstance(ours, ChipDetails) and len(ours) == len(names) and ours.size == size
        for i, name in enumerate(names):
            ref = dlib.get_face_chip_details(photo_faces[name][1], size, padding)
            assert (ref.rows, ref.cols) == (size, size)
            ref_rect = [ref.rect.left(), ref.rect.top(), ref.rect.right(), ref.rect.bottom()]
            np.testing.assert_allclose(
                ours.rect[i].numpy(), ref_rect, rtol=0, atol=GEOMETRY_ATOL, err_msg=name
            )
            assert abs(ours.angle[i].item() - ref.angle) < GEOMETRY_ATOL, name


def test_chip_to_image_maps_template_to_landmarks(photo_faces):
    """The chip->image map sends dlib's padded mean face close to the landmarks (a least-squares fit)."""
    from agelatent.perception.align import MEAN_FACE_5

    image, shape = photo_faces["rotated+25"]
    landmarks = _points(shape)
    details = face_chip_details(landmarks[None], 150, 0.25)
    template = (torch.tensor(MEAN_FACE_5, dtype=torch.float64) + 0.25) / 1.5 * 150
    mapped = template @ details.chip_to_image()[0, :, :2].T + details.chip_to_image()[0, :, 2]
    inter_ocular = np.linalg.norm(landmarks[0] - landmarks[2])
    assert np.abs(mapped.numpy() - landmarks).max() < 0.1 * inter_ocular


# ------------------------------------------------------------------------------------------------ chips


@pytest.mark.parametrize(("size", "padding"), CHIP_SPECS)
def test_chips_match_dlib_on_photos(photo_faces, size, padding):
    for name, (image, shape) in photo_faces.items():
        ref = (
            torch.from_numpy(dlib.get_face_chip(image, shape, size, padding)).permute(2, 0, 1)[None].double()
        )
        details = face_chip_details(_points(shape)[None], size, padding)
        chips = extract_chips(_to_nchw(image), details)
        assert chips.shape == (1, 3, size, size) and chips.dtype == torch.float32
        mad = (chips.double() - ref).abs().mean().item()
        assert mad < MAD_DEFAULT[size], f"{name}: mean |ours - dlib| = {mad:.3f}"
        exact = extract_chips(_to_nchw(image), details, quantize=True).double()
        mad_q = (exact - ref).abs().mean().item()
        assert mad_q < MAD_QUANTIZED, f"{name} (quantize=True): mean |ours - dlib| = {mad_q:.4f}"
        assert (exact - ref).abs().max().item() <= 1.0, name


def test_pyramid_is_what_makes_small_chips_match(photo_faces):
    """Without dlib's pyramid (plain bilinear at full resolution) the 32x32 chips are far off."""
    image, shape = photo_faces["astronaut"]
    ref = torch.from_numpy(dlib.get_face_chip(image, shape, 32, 0.2)).permute(2, 0, 1)[None].double()
    details = face_chip_details(_points(shape)[None], 32, 0.2)
    plain = extract_chips(_to_nchw(image), details, pyramid=False).double()
    assert (plain - ref).abs().mean().item() > 3.0


def test_generated_chips_batched_match_dlib(generated, landmarker):
    """A batch of generated faces at the work size: odd and even crop phases, pyramid depths 0-3, mixed."""
    work = resize_bicubic(generated, 256).round().clamp(0, 255)
    landmarks = landmarker(work)
    images_u8 = work.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    for size, padding in CHIP_SPECS:
        details = face_chip_details(landmarks, size, padding)
        chips = extract_chips(work, details, quantize=True)
        ref = np.stack(
            [
                dlib.get_face_chip(img, _dlib_shape(lm), size, padding)
                for img, lm in zip(images_u8, landmarks.numpy(), strict=True)
            ]
        )
        ref = torch.from_numpy(ref).permute(0, 3, 1, 2).float()
        mad = (chips - ref).abs().mean((1, 2, 3))
        assert mad.max().item() < MAD_QUANTIZED, f"size {size}: worst face {mad.max().item():.4f}"
        # batching changes nothing: each face alone gives the same chip
        for i in (0, N_GENERATED - 1):
            single = ChipDetails(details.rect[i : i + 1], details.angle[i : i + 1], size)
            torch.testing.assert_close(
                extract_chips(work[i : i + 1], single, quantize=True), chips[i : i + 1]
            )


# ------------------------------------------------------------------------------------------------ gradients


def test_gradients_reach_the_images(photo_faces):
    image, shape = photo_faces["enlarged-1.7"]  # one pyramid level for 64, two for 32
    x = _to_nchw(image).requires_grad_(True)
    for size, padding in CHIP_SPECS:
        for quantize in (False, True):
            x.grad = None
            chips = extract_chips(
                x, face_chip_details(_points(shape)[None], size, padding), quantize=quantize
            )
            chips.mean().backward()
            grad = x.grad
            assert torch.isfinite(grad).all()
            assert (grad != 0).sum() > size * size, (size, quantize)
            assert grad[..., :50, :50].abs().sum() == 0  # far from the face: no influence


def test_gradcheck_small():
    """Exact gradients (float64) through the pyramid, the phase selection and the sampling."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 23, 25, dtype=torch.float64, generator=gen).requires_grad_(True)
    landmarks = torch.tensor(
        [
            [[17.0, 8.0], [14.0, 8.5], [6.0, 8.0], [9.0, 8.5], [11.5, 14.0]],
            [[18.0, 9.0], [15.0, 9.0], [7.0, 7.0], [10.0, 8.0], [13.0, 14.0]],
        ]
    )
    details = face_chip_details(landmarks, 6, 0.2)
    torch.autograd.gradcheck(lambda t: extract_chips(t, details), (x,))


def test_hand_written_gradients_are_exact():
    """The bicubic resize and the pyramid filter compute their gradients by hand (transposed linear maps,
    one buffer): checked against finite differences, for both pixel phases, both axes and odd/even sizes;
    the values are the plain code's, bit for bit."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 5, 7, dtype=torch.float64, generator=gen).requires_grad_(True)
    torch.autograd.gradcheck(lambda t: resize_bicubic(t, 9), (x,))
    small = torch.rand(3, 2, 11, 12, dtype=torch.float64, generator=gen).requires_grad_(True)
    odd = torch.tensor([True, False, True])
    for dim in (-1, -2):
        torch.autograd.gradcheck(lambda t, dim=dim: _filter_down(t, dim, odd), (small,))
        assert torch.equal(_filter_down(small, dim, odd), _filter_down_values(small.detach(), dim, odd))
    images = torch.rand(2, 3, 64, 64, generator=gen) * 255
    torch.testing.assert_close(  # the matmul form is F.interpolate's map (measured max 6e-5 at 0..255)
        resize_bicubic(images, 256),
        torch.nn.functional.interpolate(images, size=(256, 256), mode="bicubic"),
        atol=2e-4,
        rtol=0,
    )


def test_chips_cut_from_the_small_image_equal_chips_of_its_work_image(generated, landmarker):
    """extract_chips_upsampled (each pyramid level a separable map of the 64x64 image) gives the chips
    extract_chips cuts from the 256 work image, at every chip size (pyramid levels 0, 1, 2) and pixel
    phase, up to float32 rounding (measured max 6e-5 gray levels); its gradient is the same linear map."""
    lm = landmarker(generated)
    work_lm = rescale_landmarks(lm, (64, 64), (256, 256))
    work = resize_bicubic(generated, 256)
    for size, padding in CHIP_SPECS:
        details = face_chip_details(work_lm, size, padding)
        reference = extract_chips(work, details)
        for given in (None, work):
            chips = extract_chips_upsampled(generated, 256, details, work=given)
            torch.testing.assert_close(chips, reference, atol=1e-3, rtol=0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=gen).requires_grad_(True)
    face = torch.tensor([[22.0, 12], [18, 12], [8, 12], [12, 12], [15, 20]])
    small = face_chip_details(torch.stack([face, face + 1]), 5, 0.2)  # level 2 of the 32 image, two phases
    torch.autograd.gradcheck(lambda t: extract_chips_upsampled(t, 32, small), (x,))
    assert torch.allclose(extract_chips_upsampled(x, 32, small), extract_chips(resize_bicubic(x, 32), small))


@pytest.mark.gpu
def test_cuda_matches_cpu(photo_faces):
    image, shape = photo_faces["enlarged-1.7"]  # pyramid levels 0 / 1 / 2 for 150 / 64 / 32
    x = _to_nchw(image)
    for size, padding in CHIP_SPECS:
        details = face_chip_details(_points(shape)[None], size, padding)
        for quantize in (False, True):
            cpu = extract_chips(x, details, quantize=quantize)
            xc = x.cuda().requires_grad_(True)
            gpu = extract_chips(xc, details, quantize=quantize)
            assert gpu.device.type == "cuda"
            torch.testing.assert_close(gpu.cpu(), cpu, atol=1.0 if quantize else 1e-3, rtol=0)
            gpu.sum().backward()
            assert torch.isfinite(xc.grad).all() and xc.grad.abs().sum() > 0


@pytest.mark.gpu
def test_torch_landmarks_on_cuda_match_dlib(generated, predictor_path):
    """On a GPU the port sums each cascade's leaves in float64 (not dlib's sequential float32): landmarks
    may move by a pixel where a feature pixel sits on a rounding boundary, never more."""
    on_cpu = FivePointLandmarker(predictor_path, backend="dlib")(generated)
    on_gpu = FivePointLandmarker(predictor_path, backend="auto")(generated.cuda())
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float64
    moved = (on_gpu - on_cpu).abs().amax((1, 2))
    assert moved.max() <= 1 and (moved == 0).float().mean() >= 0.8


# ------------------------------------------------------------------------------------------------ landmarks


def test_landmarker_detect_matches_raw_dlib(photo_faces, predictor_path):
    detector = FaceDetector(FivePointLandmarker(predictor_path, work_size=None))
    for name in ("astronaut", "at-border"):
        image, shape = photo_faces[name]
        for batch in (image[None], torch.from_numpy(image).permute(2, 0, 1)[None]):  # numpy NHWC, torch NCHW
            landmarks, found = detector.detect(batch)
            assert found.tolist() == [True]
            np.testing.assert_array_equal(landmarks[0].numpy(), _points(shape), err_msg=name)
    blank = np.zeros((2, 120, 120, 3), np.uint8)
    landmarks, found = detector.detect(blank)
    assert found.tolist() == [False, False] and torch.isnan(landmarks).all()


def test_torch_shape_predictor_matches_dlib(generated, photo_faces, predictor_path):
    """The batched torch port of the five-point predictor returns dlib's landmarks exactly: on generated
    faces (fixed rect, one batch) and on every photo variant (its detected box). Measured: identical on 512
    generated faces too; with the leaf vectors summed in float64 instead of dlib's one-by-one float32, 7% of
    faces move by a pixel."""
    port = TorchShapePredictor.from_dat(predictor_path)
    dlib_backend = FivePointLandmarker(predictor_path, backend="dlib")
    torch_backend = FivePointLandmarker(predictor_path, backend="torch")
    assert torch.equal(torch_backend(generated), dlib_backend(generated))
    detector = dlib.get_frontal_face_detector()
    for name, (image, shape) in photo_faces.items():
        rects, scores, _ = detector.run(image, 1, 0.0)
        r = rects[int(np.argmax(scores))]
        box = torch.tensor([r.left(), r.top(), r.right(), r.bottom()])
        points = port(torch.from_numpy(image).permute(2, 0, 1)[None], box)
        np.testing.assert_array_equal(points[0].numpy(), _points(shape), err_msg=name)


def test_shape_predictor_file_errors_name_the_file_and_the_byte(predictor_path, tmp_path):
    data = predictor_path.read_bytes()
    weights = parse_shape_predictor(data)
    assert weights.num_parts == 5 and weights.split_pixels.shape[1:] == (500, 15, 2)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DlibFormatError, match=r"truncated\.dat: not a valid dlib shape predictor file: .*at byte"
    ):
        read_shape_predictor(truncated)
    with pytest.raises(DlibFormatError, match=r"resnet\.dat: not a valid dlib shape predictor file"):
        parse_shape_predictor(model_path("dlib_face_resnet").read_bytes(), name="resnet.dat")
    trailing = tmp_path / "trailing.dat"
    trailing.write_bytes(data + bytes([1, 0]))  # one more integer (0) after the model
    with pytest.raises(DlibFormatError, match=r"1 unexpected trailing values"):
        read_shape_predictor(trailing)
    with pytest.raises(
        ValueError, match=r"perception.landmarks must be one of \('auto', 'dlib', 'torch'\), got 'gpu'"
    ):
        FivePointLandmarker(predictor_path, backend="gpu")


def test_fixed_rect_landmarks_on_generated_faces(generated, landmarker):
    landmarks = landmarker(generated)  # 64x64 in, upsampled to 256 inside, landmarks back in 64x64 pixels
    assert landmarks.shape == (N_GENERATED, 5, 2) and landmarks.dtype == torch.float64
    assert landmarker.rect == GENERATED_FACE_RECT
    assert (landmarks >= 0).all() and (landmarks <= 63).all()
    left_eye = landmarks[:, :2].mean(1)  # the subject's left eye: image right
    right_eye = landmarks[:, 2:4].mean(1)
    nose = landmarks[:, 4]
    inter_ocular = (left_eye - right_eye).norm(dim=-1)
    # calibration (400 faces, 256 px work image): inter-ocular 34-93 px, median 76 -> 8.5-23 px at 64
    assert (inter_ocular > 6).all() and (inter_ocular < 30).all(), inter_ocular
    assert (left_eye[:, 0] > right_eye[:, 0]).all()
    assert (nose[:, 1] > torch.maximum(left_eye[:, 1], right_eye[:, 1])).all()  # nose below the eyes
    # same answer when handed the 256 work image directly, in that image's pixels
    direct = FivePointLandmarker(landmarker.predictor_path, work_size=256)(resize_bicubic(generated, 256))
    torch.testing.assert_close(rescale_landmarks(direct, (256, 256), (64, 64)), landmarks)
    # value_range: the generator's own [-1, 1] output gives the same landmarks
    signed = FivePointLandmarker(landmarker.predictor_path, value_range=(-1.0, 1.0))(generated / 127.5 - 1)
    torch.testing.assert_close(signed, landmarks)


def test_fixed_rect_agrees_with_detector_on_generated_faces(generated, landmarker):
    """The calibration: where dlib's detector finds the generated face, landmarks from its box and from the
    fixed rect agree (measured on 400 faces: mean error 1.9% of the inter-ocular distance, p90 4.6%)."""
    work = resize_bicubic(generated, 256).round().clamp(0, 255).to(torch.uint8)
    fixed = FivePointLandmarker(landmarker.predictor_path, work_size=None)
    detected, found = FaceDetector(fixed).detect(work, upsample_num_times=0)
    assert found.float().mean() > 0.5
    ours = fixed(work)[found]
    detected = detected[found]
    inter_ocular = (detected[:, :2].mean(1) - detected[:, 2:4].mean(1)).norm(dim=-1)
    relative = (ours - detected).norm(dim=-1) / inter_ocular[:, None]
    assert relative.mean() < 0.05, relative.mean()
    assert (relative.max(1).values < 0.15).float().mean() >= 0.85


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_raises_value_error(landmarker):
    details = face_chip_details(torch.zeros(2, 5, 2) + torch.arange(5.0)[None, :, None] * 10, 64, 0.2)
    with pytest.raises(ValueError, match=r"expected shape \[B, C, H, W\], got \(3, 100, 100\)"):
        extract_chips(torch.zeros(3, 100, 100), details)
    with pytest.raises(ValueError, match=r"one chip per image \(3 images.*got 2"):
        extract_chips(torch.zeros(3, 3, 100, 100), details)
    with pytest.raises(ValueError, match=r"expected ChipDetails"):
        extract_chips(torch.zeros(2, 3, 100, 100), details.rect)
    with pytest.raises(ValueError, match=r"expected shape \[B, 5, 2\] \(x, y\), got \(1, 68, 2\)"):
        face_chip_details(np.zeros((1, 68, 2)), 64, 0.2)
    with pytest.raises(ValueError, match=r"non-finite values for batch items \[1\]"):
        face_chip_details(np.stack([np.zeros((5, 2)), np.full((5, 2), np.nan)]), 64, 0.2)
    with pytest.raises(ValueError, match=r"size: expected an integer >= 2"):
        face_chip_details(np.zeros((1, 5, 2)), 1, 0.2)
    with pytest.raises(
        ValueError, match=r"expected a torch tensor \[B, 3, H, W\] \(RGB\), got \(2, 1, 64, 64\)"
    ):
        landmarker(torch.zeros(2, 1, 64, 64))
    with pytest.raises(
        ValueError, match=r"expected a numpy array \[B, H, W, 3\] \(RGB\), got \(2, 3, 64, 64\)"
    ):
        landmarker(np.zeros((2, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"rect: expected \(left, top, right, bottom\)"):
        FivePointLandmarker(landmarker.predictor_path, rect=(200, 40, 100, 216))
