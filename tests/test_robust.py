"""The robust age reading: an expectation of the age network over transforms, configured per perception,
differentiable; and experiments/robust_age.py's choice between candidate readings, on a world built with a
blind spot (a reading that smooths the blind spot away is chosen; one that keeps it is refused)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import cpu_config
from test_realness import CHECKER, SmoothWorld

from agelatent.perception.robust import RobustReading
from agelatent.perception.transforms import ImageTransform

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("robust_age", ROOT / "experiments" / "robust_age.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_reading_is_the_mean_of_its_draws_and_differentiable():
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    reading = RobustReading((ImageTransform("blur", 0.5), ImageTransform("noise", 0.05)), draws=4, seed=1)
    values = reading(lambda x: x.mean((1, 2, 3)), images)
    assert values.shape == (3,)
    torch.testing.assert_close(
        values, images.mean((1, 2, 3)), atol=0.02, rtol=0
    )  # blur and noise keep the mean
    values.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    again = RobustReading((ImageTransform("noise", 0.05),), draws=1, seed=1)
    first, second = again(lambda x: x, images.detach()), again(lambda x: x, images.detach())
    assert not torch.equal(first, second)  # each call draws fresh noise: no fixed pattern to overfit


def test_a_perception_without_a_robust_reading_reads_clean_and_a_bad_one_is_named(world):
    images = world.generate(world.sample_latents([1, 2]))
    torch.testing.assert_close(world.perception.robust_ages(images), world.perception.ages(images))
    with pytest.raises(
        ValueError, match=r"perception.robust_age.transforms.n: transform kind must be one of"
    ):
        RobustReading.from_config({"transforms": {"n": {"kind": "jpeg", "strength": 1.0}}})
    with pytest.raises(ValueError, match=r"perception.robust_age.draws must be an integer >= 1"):
        RobustReading.from_config({"transforms": {"n": {"kind": "noise", "strength": 0.1}}, "draws": 0})


def test_a_configured_robust_reading_follows_natural_differences(model_files):
    from agelatent.world import build_world

    cfg = cpu_config(
        "train",
        "perception.robust_age={transforms: {noise: {kind: noise, strength: 0.03}}, draws: 4, seed: 0}",
    )
    world = build_world(cfg)
    images = world.generate(world.sample_latents(range(3_000_000, 3_000_032)))
    with torch.no_grad():
        clean, robust = world.perception.ages(images), world.perception.robust_ages(images)
    assert float(torch.corrcoef(torch.stack([clean, robust]))[0, 1]) > 0.9


def test_the_script_refuses_a_reading_the_crafted_edits_fool_and_chooses_one_they_do_not():
    script = load_script()
    world = SmoothWorld()
    start, crafted = script.crafted_edits(world, 6, 100, years=10.0)
    before, after = world.perception.ages(start), world.perception.ages(crafted)
    assert bool(((after - before) >= 10).all())
    assert float((crafted - start).abs().max()) < 0.05  # invisible: a few gray levels at most
    residue = crafted - start - ((crafted - start) * CHECKER).mean((1, 2, 3), keepdim=True) * CHECKER
    assert float(residue.abs().max()) < 0.02  # the ascent found the blind spot, the checkerboard
    args = SimpleNamespace(
        faces=64, crafted=6, crafted_years=10.0, draws=2, window=5.0, min_correlation=0.9, slope_tolerance=0.1,
        max_crafted=0.1,
    )  # fmt: skip
    script.CANDIDATES = {
        "noise": (0.02,),
        "resample": (2.0,),
    }  # noise keeps the checkerboard, 2x area averages it away
    rows = {r["kind"]: r for r in script.measure(world, args, 1000, 100)}
    assert rows["noise"]["crafted_success"] == 1.0 and not script.passes(rows["noise"], args)
    assert rows["resample"]["crafted_success"] == 0.0 and script.passes(rows["resample"], args)
    assert script.choose(list(rows.values()), args)["kind"] == "resample"
