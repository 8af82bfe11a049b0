"""The embedded world on the real fetched models: one batched, frozen, optionally differentiable call."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from agelatent.cli.sample import sample
from agelatent.config import compose_config
from agelatent.perception.base import NonFiniteScoresError, check_finite
from agelatent.perception.embedded import EmbeddedPerception
from agelatent.store import ModelFileError
from agelatent.world import World, build_world


def _cfg(*overrides: str):
    return compose_config("sample", ["device=cpu", *overrides])


@pytest.fixture(scope="module")
def scores(world):
    return world.score(world.sample_latents(range(64)))


def test_score_returns_every_output_with_the_documented_shapes(world, scores):
    assert scores.images.shape == (64, 3, 64, 64)
    assert scores.ages_years.shape == (64,)
    assert scores.identity.shape == (64, 128)
    assert scores.p_male.shape == (64,)
    for t in (scores.images, scores.ages_years, scores.identity, scores.p_male):
        assert t.device == world.device and t.dtype == torch.float32 and not t.requires_grad


def test_scores_on_generated_faces_are_plausible(world, scores):
    # over 3,000 generated faces the age model's mean is about 31.6 years (sd 10.7); 64 faces give a mean
    # well inside 25-40
    ages = scores.ages_years
    assert 25 < ages.mean() < 40 and 5 < ages.std() < 20
    lo, hi = world.perception.age_range
    assert ((ages >= lo) & (ages <= hi)).all()
    # both genders occur, and the classifier is mostly confident
    assert 0.15 < (scores.p_male > 0.5).float().mean() < 0.85
    assert ((scores.p_male - 0.5).abs() > 0.3).float().mean() > 0.6


def test_identity_similarity_separates_a_face_from_other_faces(world, scores):
    sim = world.identity_similarity(scores.identity[:, None], scores.identity[None])
    assert torch.allclose(sim.diagonal(), torch.ones(64))
    others = sim[~torch.eye(64, dtype=torch.bool)]
    assert others.max() < 1 and others.median() < world.same_person_similarity
    # a small latent nudge keeps the person closer than a typical other face
    nudged = world.score(world.sample_latents(range(16)) + 0.05 * torch.randn(16, 100))
    same = world.identity_similarity(nudged.identity, scores.identity[:16])
    assert same.median() > others.median()


def test_same_latent_scores_identically_alone_or_in_a_chunked_batch(world, scores):
    alone = world.score(world.sample_latents([37]))
    assert world.chunk_size == 32  # the 64-face fixture went through two chunks
    torch.testing.assert_close(alone.ages_years[0], scores.ages_years[37], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(alone.identity[0], scores.identity[37], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(world.ages(world.sample_latents([37]))[0], scores.ages_years[37])


def test_networks_are_frozen_but_gradients_reach_the_latents_on_request(world):
    assert not any(p.requires_grad for p in world.parameters())
    assert not world.training
    world.train()  # Lightning does this to submodules; a world stays in eval mode
    assert not any(m.training for m in world.modules())

    z = world.sample_latents(range(4)).requires_grad_(True)
    s = world.score(z, with_grad=True)
    (s.ages_years.sum() + s.identity.sum() + s.p_male.sum()).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and (z.grad.norm(dim=1) > 0).all()
    assert not any(p.grad is not None for p in world.parameters())

    # without with_grad nothing is tracked, even for latents that require grad
    assert not world.score(z).ages_years.requires_grad


def test_the_age_gradient_predicts_the_age_change_of_a_small_step(world):
    z = world.sample_latents(range(8)).requires_grad_(True)
    ages = world.ages(z, with_grad=True)
    (grad,) = torch.autograd.grad(ages.sum(), z)
    step = 0.02 * grad / grad.norm(dim=1, keepdim=True)
    predicted = (grad * step).sum(1)
    actual = world.ages(z.detach() + step) - ages.detach()
    # the first-order prediction has the right sign and size for most faces (landmarks are constants)
    assert (torch.sign(actual) == torch.sign(predicted)).float().mean() >= 0.75
    assert actual.sum() > 0.3 * predicted.sum()


def test_onnxruntime_and_torch_runtimes_agree_inside_the_world(world, model_files):
    ort_world = build_world(_cfg("perception.runtime=onnxruntime", "perception.ort_threads=2"))
    assert not ort_world.perception.differentiable and world.perception.differentiable
    # readable from the class, before any model loads: age-v1's 81 classes run from under one year to 80
    assert EmbeddedPerception.age_range == world.perception.age_range == (0.0, 80.0)
    z = world.sample_latents(range(8))
    a, b = world.score(z), ort_world.score(z)
    torch.testing.assert_close(a.ages_years, b.ages_years, rtol=0, atol=1e-3)
    torch.testing.assert_close(a.p_male, b.p_male, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.identity, b.identity)


def test_check_finite_names_the_network_every_bad_output_and_its_rows():
    ok = torch.ones(3, 4)
    check_finite({"ages": torch.ones(3), "identity embeddings": ok}, "net")
    check_finite({"ages": torch.ones(0), "identity embeddings": torch.ones(0, 128)}, "net")  # empty batch
    bad = ok.clone()
    bad[2, 1] = float("inf")
    ages = torch.tensor([1.0, float("nan"), 3.0])
    with pytest.raises(
        NonFiniteScoresError,
        match=r"^age net produced non-finite ages for batch rows \[1\], identity embeddings for batch rows \[2\];",
    ):
        check_finite(
            {"ages": ages, "gender probabilities": torch.ones(3), "identity embeddings": bad}, "age net"
        )


def test_bad_inputs_fail_with_messages_that_name_the_problem(world, model_files, tmp_path):
    with pytest.raises(ValueError, match=r"latents: expected \[B, 100\], got \(3, 10\)"):
        world.score(torch.zeros(3, 10))
    with pytest.raises(NonFiniteScoresError, match=r"non-finite ages for batch rows \[1\]"):
        images = world.generate(world.sample_latents(range(2)))
        images[1, :, 20:40, 20:40] = float("nan")
        world.perception.ages(images)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        World(world.generator, world.perception, chunk_size=0)
    missing = tmp_path / "age-v1.onnx"
    with pytest.raises(
        ModelFileError, match=r"'age_onnx' overridden to .*age-v1\.onnx, which does not exist"
    ):
        EmbeddedPerception(age_path=missing)
    with pytest.raises(
        ValueError, match=r"perception.runtime must be one of \('onnxruntime', 'torch'\), got 'tensorflow'"
    ):
        EmbeddedPerception(runtime="tensorflow")


def test_sample_writes_an_annotated_grid_and_a_csv_of_scores(world, tmp_path):
    means = sample(_cfg("num_faces=5", "first_seed=10", "columns=4"), tmp_path)
    png, csv_path = tmp_path / "samples.png", tmp_path / "scores.csv"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [10, 11, 12, 13, 14]
    expected = world.score(world.sample_latents(range(10, 15)))
    for row, age, pm in zip(rows, expected.ages_years, expected.p_male, strict=True):
        assert float(row["age_years"]) == pytest.approx(age.item(), abs=0.01)
        assert row["gender"] == ("male" if pm >= 0.5 else "female")
    assert means["mean_age"] == pytest.approx(float(expected.ages_years.mean()), abs=1e-4)
    grid = Image.open(png)
    assert grid.mode == "RGB" and grid.width > grid.height > 2 * 64  # 4 columns x 2 rows, with captions


def _jittered(world, **jitter):
    from hydra.utils import instantiate

    overrides = [f"perception.age_jitter.{k}={v}" for k, v in jitter.items()]
    return World(world.generator, instantiate(_cfg(*overrides).perception), world.device)


def test_alignment_jitter_averages_random_crops_only_inside_augmentation(world, scores):
    latents = world.sample_latents(range(16))
    exact = scores.ages_years[:16]
    jw = _jittered(world, crops=4)
    torch.testing.assert_close(jw.score(latents).ages_years, exact)  # off outside the block
    with jw.perception.augmentation():
        first, second = jw.score(latents).ages_years, jw.score(latents).ages_years
        grad_ages = jw.ages(latents.clone().requires_grad_(True), with_grad=True)
    assert (first - exact).abs().mean() > 0.05  # other crops, other ages ...
    assert (first - exact).abs().mean() < 5.0  # ... of the same faces
    assert not torch.equal(first, second)  # fresh draws every call
    assert grad_ages.requires_grad  # the reward's age stays differentiable
    torch.testing.assert_close(jw.score(latents).ages_years, exact)  # and off again after it
    again = _jittered(world, crops=4)
    with again.perception.augmentation():
        torch.testing.assert_close(again.score(latents).ages_years, first)  # seeded


def test_zero_jitter_is_the_exact_crop(world, scores):
    jw = _jittered(world, crops=3, shift=0.0, scale=0.0, rotate_degrees=0.0, flip=False)
    with jw.perception.augmentation():
        ages = jw.score(world.sample_latents(range(16))).ages_years
    torch.testing.assert_close(ages, scores.ages_years[:16], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("jitter", "message"),
    [({"crops": -1}, "crops must be >= 0"), ({"shift": 0.9}, r"shift must be in \[0, 0.5\]")],
)
def test_bad_jitter_settings_are_refused_before_any_model_loads(tmp_path, jitter, message):
    from agelatent.cli.train import validate

    overrides = [f"perception.age_jitter.{k}={v}" for k, v in jitter.items()]
    with pytest.raises(ValueError, match=message):
        validate(compose_config("train", ["device=cpu", *overrides]))
