"""The realness judge: transforms that keep what a person sees, and the fraction of an edit's age change that
survives them relative to natural differences. On a world made for it -- an "age network" that reads the
face's brightness (visible) and, much more steeply, a one-pixel checkerboard (its blind spot) -- a visible
edit keeps its change and a blind-spot edit loses it; then the judge on the real embedded world."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import cpu_config

from agelatent.editors.base import EditResult
from agelatent.evaluation.realness import calibrate_realness, realness_summary, transforms_from_config
from agelatent.perception.base import FaceScores
from agelatent.perception.transforms import ImageTransform, gaussian_blur, pixel_noise, resample

SIZE = 16
CHECKER = ((torch.arange(SIZE)[:, None] + torch.arange(SIZE)[None]) % 2 * 2 - 1).float()  # ±1, period 2 px
BOOTSTRAP = SimpleNamespace(resamples=400, seed=0)


class BlindSpotPerception:
    """Age = 40 + 20 · brightness + 400 · (checkerboard content): the checkerboard moves it far more per unit
    of pixel change, and no person would call it age."""

    robust_age = None

    def ages(self, images):
        brightness = images.mean((1, 2, 3))
        checker = (images * CHECKER).mean((1, 2, 3))
        return 40.0 + 20.0 * brightness + 400.0 * checker

    def __call__(self, images):
        return FaceScores(self.ages(images), images.flatten(1)[:, :8], torch.zeros(len(images)))


class SmoothWorld:
    """Unedited faces differ in brightness and in a smooth gradient: natural differences the eye sees."""

    chunk_size = None
    device = torch.device("cpu")
    perception = BlindSpotPerception()

    def sample_latents(self, seeds):
        return torch.stack([torch.randn(2, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def generate(self, latents):
        ramp = torch.linspace(-1, 1, SIZE)[None, :].expand(SIZE, SIZE)
        images = 0.3 * latents[:, 0, None, None] + 0.2 * latents[:, 1, None, None] * ramp
        return images[:, None].expand(-1, 3, -1, -1).clone()


def edits(start: torch.Tensor, final: torch.Tensor, targets: torch.Tensor) -> EditResult:
    n = len(start)
    perception = BlindSpotPerception()
    ages = torch.stack([perception.ages(start), perception.ages(final)])
    return EditResult(
        editor="test", start_latents=torch.zeros(n, 2), targets=targets, latents=torch.zeros(2, n, 2), ages=ages,
        similarity=torch.ones(2, n), p_male=torch.zeros(2, n), final_images=final, start_images=start,
        outcome=torch.zeros(n, dtype=torch.long), steps=torch.ones(n, dtype=torch.long), world_calls=n,
        row_world_calls=torch.ones(n), typicality=torch.zeros(n), seconds=0.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def judge():
    transforms = transforms_from_config(
        {
            "blur": {"kind": "blur", "strength": 1.0},
            "resample": {"kind": "resample", "strength": 2.0},
            "noise": {"kind": "noise", "strength": 0.05, "draws": 4},
        }
    )
    world = SmoothWorld()
    return world, transforms, calibrate_realness(world, transforms, 64, 1000)


def test_natural_differences_survive_the_transforms(judge):
    _, transforms, cal = judge
    for name in transforms:
        assert cal.correlation(name) > 0.99 and 0.9 < cal.slope(name) < 1.1, name


def test_a_visible_edit_keeps_its_age_change_and_a_blind_spot_edit_loses_it(judge):
    world, transforms, cal = judge
    start = world.generate(world.sample_latents(range(16)))
    targets = torch.full((16,), 70.0)
    visible = realness_summary(world, edits(start, start + 0.2, targets), cal, transforms, BOOTSTRAP)
    blind = realness_summary(world, edits(start, start + 0.02 * CHECKER, targets), cal, transforms, BOOTSTRAP)
    # both raise the network's age reading: by 4 years (brightness) and by 8 (checkerboard)
    assert visible["kept"] == pytest.approx(1.0, abs=0.1)
    assert visible["kept_low"] <= visible["kept"] <= visible["kept_high"]
    assert blind["kept_resample"] == pytest.approx(0.0, abs=0.05)  # 2x down-sampling averages it away
    assert blind["kept_blur"] < 0.3 and blind["kept"] < 0.3
    # per requested year (the same targets), the visible edit moves ten times the pixels
    assert visible["pixels_per_year"] == pytest.approx(10 * blind["pixels_per_year"], rel=1e-4)


def test_transforms_keep_flat_images_and_their_mean():
    flat = torch.full((2, 3, SIZE, SIZE), 0.25)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    torch.testing.assert_close(resample(flat, 2.0), flat)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gaussian_blur(images, 1.0).mean(), images.mean(), atol=0.02, rtol=0)
    a = pixel_noise(images, 0.05, torch.Generator().manual_seed(3))
    b = pixel_noise(images, 0.05, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert 0.04 < float((a - images).std()) < 0.06


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "sharpen", "strength": 1.0}, "transform kind must be one of"),
        ({"kind": "blur", "strength": 0.0}, "strength must be a finite number > 0"),
        ({"kind": "resample", "strength": 1.0}, "a down-sampling factor > 1"),
        ({"kind": "noise", "strength": 0.1, "draws": 0}, "draws must be an integer >= 1"),
    ],
)
def test_a_bad_transform_is_named(spec, message):
    with pytest.raises(ValueError, match=message):
        ImageTransform(**spec)
    with pytest.raises(ValueError, match=r"evaluator realness: transforms.t: "):
        transforms_from_config({"t": spec})


def test_the_judge_reports_on_the_embedded_world(tmp_path, model_files):
    from agelatent.evaluation.comparison import evaluate

    cfg = cpu_config(
        "eval", "evaluator=realness", "evaluator.realness.natural_faces=8", "editors=[random_walk,local_linear_walk]",
        "protocol.num_faces=2", "protocol.targets=[20,60]", "logger=none",
    )  # fmt: skip
    rows = {r["editor"]: r for r in evaluate(cfg, tmp_path)}
    for row in rows.values():
        for key in (
            "kept",
            "kept_blur",
            "kept_resample",
            "kept_noise",
            "pixels_per_year",
            "identity_per_year",
        ):
            assert f"realness/{key}" in row
        assert all(math.isfinite(v) for k, v in row.items() if k.startswith("realness/"))
        assert row["realness/pixels_per_year"] >= 0 and row["realness/identity_per_year"] >= 0
    assert "age kept (realness)" in (tmp_path / "results.md").read_text()
