"""Real photos in and out (agelatent.photos, agelatent-edit): every file format handled or refused, detection
counts, the alignments' geometry against dlib's own chips and against the FFHQ recipe's PIL transform, inversion lowering its loss, the paste-back leaving
the rest of the photo alone, and the CLI writing its PNG and CSV. Photos: scikit-image's astronaut (Eileen
Collins) and its LFW subset (25x25 faces: too small to detect)."""

from __future__ import annotations

import csv
import math

import dlib
import numpy as np
import pytest
import skimage.data
import torch
from conftest import cpu_config
from PIL import Image

from agelatent.cli.edit import run as edit_run
from agelatent.perception.align import DEFAULT_PADDING, MEAN_FACE_5, face_chip_details
from agelatent.photos import PhotoError, list_photos, load_photo
from agelatent.photos.editing import parse_targets
from agelatent.photos.faces import (
    FaceDetector,
    align_face,
    detect_faces,
    ffhq_padded,
    ffhq_quad,
    generator_template,
    sixty_eight_point_predictor,
)
from agelatent.photos.invert import InversionSettings, invert
from agelatent.photos.paste import paste_back

AGE_RANGE = (0.0, 80.0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def landmarker(model_files) -> FaceDetector:
    return FaceDetector()


def _faces(photo, landmarker, **kw):
    return detect_faces(photo, landmarker, **{"min_face_px": 48, "min_score": 0.5, **kw})


# ------------------------------------------------------------------------------------------------ files


def test_odd_formats_load_upright_as_rgb(astronaut, tmp_path):
    rgb = Image.fromarray(astronaut)
    rgb.save(tmp_path / "plain.png")
    plain = load_photo(tmp_path / "plain.png")
    assert plain.shape == astronaut.shape and plain.dtype == np.uint8 and plain.flags.writeable
    np.testing.assert_array_equal(plain, astronaut)

    rgb.convert("L").save(tmp_path / "grey.png")
    grey = load_photo(tmp_path / "grey.png")
    assert grey.shape == astronaut.shape and (grey[..., 0] == grey[..., 2]).all()

    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(load_photo(tmp_path / "cmyk.jpg").astype(int) - astronaut).mean() < 8

    rgba = rgb.convert("RGBA")
    alpha = np.full(astronaut.shape[:2], 255, np.uint8)
    alpha[:50, :50] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "alpha.png")
    composited = load_photo(tmp_path / "alpha.png")
    assert (composited[:50, :50] == 128).all() and (composited[60:, 60:] == astronaut[60:, 60:]).all()

    # a phone's portrait: pixels stored rotated, with EXIF orientation 6 ("rotate 90 CW to view")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = load_photo(tmp_path / "rotated.jpg")
    assert upright.shape == astronaut.shape and np.abs(upright.astype(int) - astronaut).mean() < 8

    (tmp_path / "notes.txt").write_text("not a photo")
    with pytest.raises(PhotoError, match=r"notes\.txt: not a readable image"):
        load_photo(tmp_path / "notes.txt")
    with pytest.raises(PhotoError, match=r"nope\.jpg: no such photo file"):
        load_photo(tmp_path / "nope.jpg")
    assert [p.name for p in list_photos(tmp_path)] == [
        "alpha.png",
        "cmyk.jpg",
        "grey.png",
        "plain.png",
        "rotated.jpg",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PhotoError, match=r"empty: a folder without photos"):
        list_photos(empty)


# ------------------------------------------------------------------------------------------------ faces


def test_detection_counts_and_refusals(astronaut, landmarker):
    (face,) = _faces(astronaut, landmarker)  # the mission patch on the suit (score 0.15) is left out
    assert face.score > 1 and face.landmarks.shape == (5, 2)
    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    assert len(_faces(np.ascontiguousarray(pair), landmarker)) == 2
    grey = np.repeat(astronaut.mean(2, keepdims=True).astype(np.uint8), 3, 2)
    assert len(_faces(grey, landmarker)) == 1
    with pytest.raises(PhotoError, match=r"blank: no face found"):
        _faces(np.full((200, 200, 3), 90, np.uint8), landmarker, name="blank")
    lfw = np.repeat((skimage.data.lfw_subset()[0] * 255).astype(np.uint8)[..., None], 3, 2)  # a 25x25 face
    with pytest.raises(PhotoError, match=r"no face found"):
        _faces(np.ascontiguousarray(lfw), landmarker)
    with pytest.raises(PhotoError, match=r"1 face\(s\) found, 91 pixels wide at most, below min_face_px=200"):
        _faces(astronaut, landmarker, min_face_px=200)


def test_alignment_cuts_the_chip_dlib_cuts(astronaut, landmarker):
    """With dlib's own chip template (its mean face, padded) the alignment is dlib.get_face_chip's geometry:
    the crop's corners land within a pixel of dlib's (measured 0.52 px: dlib steps by (size*scale - 1)/(size
    - 1), a least-squares similarity by scale), and the crops agree to within that and the sampling
    difference (dlib's pyramid on uint8 vs our supersampled average; measured mean 4.6 gray levels)."""
    (face,) = _faces(astronaut, landmarker)
    size, pad = 150, DEFAULT_PADDING
    template = (np.array(MEAN_FACE_5) + pad) / (2 * pad + 1) * size
    aligned = align_face(astronaut, face, size, template=template)
    dlib_map = face_chip_details(face.landmarks[None], size, pad).chip_to_image()[0].numpy()
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], float).T
    assert np.abs(aligned.crop_to_photo @ corners - dlib_map @ corners).max() < 1.0
    shape = dlib.full_object_detection(
        dlib.rectangle(*face.box), [dlib.point(int(x), int(y)) for x, y in face.landmarks]
    )
    chip = dlib.get_face_chip(astronaut, shape, size=size, padding=pad)
    assert np.abs(aligned.crop.permute(1, 2, 0).numpy() - chip.astype(np.float64)).mean() < 6.0


def _pil_quad_crop(photo: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """The FFHQ recipe's resampling: PIL's QUAD transform of the quad (+0.5: PIL puts pixel centres at
    half-integers) at 4x the size, then a Lanczos resize."""
    big = Image.fromarray(photo).transform(
        (4 * size, 4 * size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR
    )
    return np.asarray(big.resize((size, size), Image.Resampling.LANCZOS)).astype(np.float32)


def test_the_ffhq_alignment_cuts_the_recipes_crop(astronaut, landmarker):
    """FFHQ's crop from dlib's 68 landmarks: an upright square around the face (eyes above the centre,
    mouth below), sampled where PIL's QUAD transform samples it -- a mean 0.65 gray levels apart at 256
    (resampling: our averaged bilinear samples vs PIL's bilinear + Lanczos), while the same quad moved by
    half a photo pixel is 3.5 apart: the geometry is right to well under a pixel."""
    predictor = sixty_eight_point_predictor()
    (face,) = _faces(astronaut, landmarker, predictor68=predictor)
    assert face.landmarks68.shape == (68, 2)
    quad = ffhq_quad(face.landmarks68)
    x_axis, y_axis = quad[3] - quad[0], quad[1] - quad[0]
    assert abs(x_axis @ y_axis) < 1e-9 and np.isclose(np.hypot(*x_axis), np.hypot(*y_axis))
    assert abs(math.atan2(x_axis[1], x_axis[0])) < 0.1  # her head is upright
    eyes, mouth = face.landmarks68[36:48].mean(0), face.landmarks68[48:68].mean(0)
    centre = quad.mean(0)
    assert eyes[1] < centre[1] < mouth[1] and abs(centre[0] - (eyes[0] + mouth[0]) / 2) < 5
    size = 256
    aligned = align_face(astronaut, face, size, alignment="ffhq")
    ours = aligned.crop.permute(1, 2, 0).numpy()
    assert np.abs(ours - _pil_quad_crop(astronaut, quad, size)).mean() < 1.0
    moved = _pil_quad_crop(astronaut, quad + np.array([0.5, 0.0]), size)
    assert np.abs(ours - moved).mean() > 2.5
    with pytest.raises(ValueError, match=r"ffhq alignment needs the face's 68 landmarks"):
        align_face(astronaut, _faces(astronaut, landmarker)[0], size, alignment="ffhq")
    with pytest.raises(ValueError, match=r"alignment must be one of"):
        align_face(astronaut, face, size, alignment="celeba")


def test_the_ffhq_padding_mirrors_blurs_and_fades_to_the_median(astronaut, landmarker):
    """A face near the photo's corner: FFHQ's square reaches past the border, so the photo is mirrored
    outwards; the photo's own pixels away from its edge stay as they were, and the band's outer edge is the
    photo's median colour. A face well inside is only cropped."""
    predictor = sixty_eight_point_predictor()
    (inside,) = _faces(astronaut, landmarker, predictor68=predictor)
    quad = ffhq_quad(inside.landmarks68)
    image, offset = ffhq_padded(astronaut, quad)
    x0, y0 = offset.astype(int)
    assert np.array_equal(image, astronaut[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]])
    corner = np.ascontiguousarray(astronaut[40:, 120:])  # her face near the top-left corner
    (face,) = _faces(corner, landmarker, predictor68=predictor)
    quad = ffhq_quad(face.landmarks68)
    assert quad[:, 1].min() < 0  # the square leaves the photo at the top
    image, offset = ffhq_padded(corner, quad)
    dx, dy = -offset.astype(int)
    assert dx > 0 and dy > 0 and np.isfinite(image).all()
    side = np.hypot(*(quad[3] - quad[0]))
    keep = int(np.ceil(side * 0.3 / 3)) + 2  # the blur reaches a third of the band into the photo
    region = image[dy + keep : dy + 150, dx + keep : dx + 150]
    assert np.array_equal(region, corner[keep:150, keep:150].astype(np.float32))
    median = np.median(image, axis=(0, 1))
    assert np.allclose(image[0, 0], median, atol=1e-3) and np.allclose(image[-1, -1], median, atol=1e-3)
    crop = align_face(corner, face, 64, alignment="ffhq").crop
    assert crop.shape == (3, 64, 64) and torch.isfinite(crop).all()


def test_the_generators_template_and_inversion_lowering_its_loss(world, astronaut, landmarker):
    template = generator_template(world, 16, 3_000_000)
    assert template.shape == (5, 2) and (template > 0).all() and (template < 63).all()
    assert template[0, 0] > template[2, 0]  # the subject's left eye (image right) first, as dlib orders
    (face,) = _faces(astronaut, landmarker)
    crop = align_face(astronaut, face, 64, template=template).crop / 127.5 - 1
    settings = InversionSettings(
        steps=12, restarts=2, lr=0.05, pixel_weight=1.0, identity_weight=1.0, prior_weight=0.1, seed=0
    )
    steps = []
    result = invert(world, crop, settings, steps.append)
    assert steps == list(range(1, 13)) and result.losses.shape == (13, 2)
    assert result.losses[-1].min() < 0.8 * result.losses[0].min()
    assert result.image.shape == (3, 64, 64) and result.latent.shape == (world.latent_dim,)
    with pytest.raises(ValueError, match=r"inversion.steps must be an integer >= 1, got 0"):
        InversionSettings(**{**settings.__dict__, "steps": 0})


def test_paste_back_keeps_the_photo_outside_the_face(astronaut, landmarker):
    (face,) = _faces(astronaut, landmarker)
    template = (np.array(MEAN_FACE_5) + 0.25) / 1.5 * 64
    aligned = align_face(astronaut, face, 64, template=template)
    edited = torch.full((3, 64, 64), 255.0)
    out = paste_back(astronaut, edited, aligned.crop, aligned.crop_to_photo, feather=0.2)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    changed = (out != astronaut).any(-1)
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = face.box
    assert changed.sum() > 1000 and x0 - 60 <= xs.min() and xs.max() <= x1 + 60 and ys.min() >= y0 - 60
    untouched = np.ones_like(changed)
    untouched[max(y0 - 60, 0) : y1 + 60, max(x0 - 60, 0) : x1 + 60] = False
    assert not changed[untouched].any()
    with pytest.raises(ValueError, match=r"feather must be in \(0, 1\]"):
        paste_back(astronaut, edited, aligned.crop, aligned.crop_to_photo, feather=0)


# ------------------------------------------------------------------------------------------------ CLI


def test_targets_parse_and_bad_ones_are_named():
    targets = parse_targets(["+20", "-10", 70, -5], AGE_RANGE)
    assert [(t.years, t.relative) for t in targets] == [(20, True), (-10, True), (70, False), (-5, True)]
    assert [t.relative for t in parse_targets("+5,60", AGE_RANGE)] == [True, False]
    assert targets[0].resolve(30.0, AGE_RANGE) == 50.0
    with pytest.raises(ValueError, match=r"target \+20y asks for age 90.0, outside the age network's range"):
        targets[0].resolve(70.0, AGE_RANGE)
    with pytest.raises(ValueError, match=r"targets: 'old' is neither an age"):
        parse_targets(["old"], AGE_RANGE)
    with pytest.raises(ValueError, match=r"target 95 asks for age 95.0, outside"):
        parse_targets([95], AGE_RANGE)


def test_edit_writes_the_sheet_the_csv_the_latent_and_the_pasted_photo(world, astronaut, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "astronaut.jpg")
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(photos / "wall.png")  # no face: skipped
    cfg = cpu_config(
        "edit", f"photo={photos}", "targets=[\"+10\",50]", "inversion.steps=4", "inversion.restarts=1",
        "template_faces=8", "editors=[local_linear_walk,random_walk]",
    )  # fmt: skip
    out = tmp_path / "out"
    rows = edit_run(cfg, out)
    assert len(rows) == 4  # one face x two editors x two targets
    with open(out / "edits.csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["editor"], r["target"]) for r in written] == [
        ("local_linear_walk", "+10y"), ("local_linear_walk", "50"), ("random_walk", "+10y"), ("random_walk", "50"),
    ]  # fmt: skip
    for r in written:
        assert math.isfinite(float(r["final_age"])) and -1 <= float(r["similarity_to_photo"]) <= 1
        assert int(r["world_calls"]) > 0 and r["outcome"] in {"success", "identity_lost", "timeout"}
    assert float(written[0]["target_age"]) == pytest.approx(
        float(written[0]["reconstruction_age"]) + 10, abs=0.02
    )
    sheet = Image.open(out / "astronaut_face0.png")
    assert sheet.size[0] > 4 * 128 and sheet.size[1] > 2 * 128  # 2 editor rows x (photo, recon, 2 edits)
    pasted = Image.open(out / "astronaut_face0_random_walk_50.png")
    assert pasted.size == (astronaut.shape[1], astronaut.shape[0])
    saved = torch.load(out / "astronaut_face0_latent.pt", weights_only=True)
    assert saved["latent"].shape == (world.latent_dim,) and saved["alignment"] == "template"
    again = cpu_config(
        "edit", f"latent={out / 'astronaut_face0_latent.pt'}", "targets=[30]", "editors=[random_walk]",
    )  # fmt: skip
    rows = edit_run(again, tmp_path / "again")  # the saved face, edited again: no detection, no inversion
    assert [(r["editor"], r["target"]) for r in rows] == [("random_walk", "30")]
    first = next(r for r in written if r["editor"] == "random_walk")
    # the same latent (saved exactly) and the same crop (saved as uint8: its scores move by rounding only)
    assert rows[0]["reconstruction_age"] == float(first["reconstruction_age"])
    assert rows[0]["inversion_loss"] == float(first["inversion_loss"])
    assert rows[0]["photo_age"] == pytest.approx(float(first["photo_age"]), abs=0.1)
    assert rows[0]["reconstruction_similarity_to_photo"] == pytest.approx(
        float(first["reconstruction_similarity_to_photo"]), abs=0.01
    )
    assert Image.open(tmp_path / "again" / "astronaut_face0_random_walk_30.png").size == pasted.size


def test_edit_refuses_bad_settings_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match=r"photo is null: set photo="):
        edit_run(cpu_config("edit"), tmp_path)
    with pytest.raises(ValueError, match=r"latent=.*nope.pt: no such file"):
        edit_run(cpu_config("edit", f"latent={tmp_path / 'nope.pt'}"), tmp_path)
    with pytest.raises(ValueError, match=r"photo and latent are both set"):
        edit_run(cpu_config("edit", f"latent={tmp_path / 'nope.pt'}", f"photo={tmp_path}"), tmp_path)
    with pytest.raises(PhotoError, match=r"nope: no such photo file or folder"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'nope'}"), tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"targets: 'x' is neither"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'a.png'}", "targets=[x]"), tmp_path)
    with pytest.raises(ValueError, match=r"inversion.lr must be a finite number > 0"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'a.png'}", "inversion.lr=0"), tmp_path)
    with pytest.raises(ValueError, match=r"editors includes sac_policy but policy is null"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'a.png'}", "editors=[sac_policy]"), tmp_path)
