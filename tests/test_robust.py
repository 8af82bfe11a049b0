"""The robust age reading: an expectation of the age network over transforms, configured per perception,
differentiable; and experiments/robust_age.py's choice between candidate readings, on a world built with a
blind spot (a reading that smooths the blind spot away is chosen; one that keeps it is refused)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from conftest import cpu_config, load_experiment
from test_realness import CHECKER, SmoothWorld

from agelatent.generators import Generator
from agelatent.perception.base import FaceScores, Perception
from agelatent.perception.robust import RobustReading
from agelatent.perception.transforms import ImageTransform


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
    with pytest.raises(ValueError, match=r"perception.robust_age.slope must be a finite number > 0"):
        RobustReading.from_config({"transforms": {"b": {"kind": "blur", "strength": 1.0}}, "slope": 0.0})


def test_a_reading_with_a_line_is_put_on_the_clean_scale():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    spec = {"transforms": {"b": {"kind": "blur", "strength": 0.5}}}
    raw = RobustReading.from_config(spec)(lambda x: 10 * x.mean((1, 2, 3)), images)
    line = RobustReading.from_config({**spec, "intercept": 2.0, "slope": 0.5})
    torch.testing.assert_close(line(lambda x: 10 * x.mean((1, 2, 3)), images), (raw - 2.0) / 0.5)


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
    script = load_experiment("robust_age")
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


class CheckerGenerator(Generator):
    """z [B, 2] -> 8 x 8 images: z[0] sets the brightness (what a person sees), z[1] a faint checkerboard
    (what only :class:`CheckerPerception`'s blind spot sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim, self.resolution = 2, 8
        self.checker = torch.nn.Parameter(CHECKER[:8, :8].clone(), requires_grad=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        images = 0.3 * latents[:, 0, None, None] + 0.02 * latents[:, 1, None, None] * self.checker
        return images[:, None].expand(-1, 3, -1, -1)


class CheckerPerception(Perception):
    """Age 40 + 20 brightness + 400 checkerboard content (8 years per unit of z[1], 6 per unit of z[0]); the
    robust reading (2x down-sampling) averages the checkerboard away."""

    age_range = (0.0, 80.0)
    identity_dim = 2
    same_person_similarity = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.robust_age = RobustReading.from_config(
            {"transforms": {"resample": {"kind": "resample", "strength": 2.0}}}
        )

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        checker = (images * CHECKER[:8, :8]).mean((1, 2, 3))
        return 40.0 + 20.0 * images.mean((1, 2, 3)) + 400.0 * checker

    def forward(self, images: torch.Tensor) -> FaceScores:
        return FaceScores(self.ages(images), torch.ones(len(images), 2), torch.full((len(images),), 0.5))


def test_the_env_sees_the_robust_reading_and_succeeds_only_where_both_readings_agree():
    from conftest import make_env

    from agelatent.world import World

    world = World(CheckerGenerator(), CheckerPerception(), chunk_size=None)
    start = torch.zeros(3, 2)
    scores = world.score(start + torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(scores.clean_ages, torch.full((3,), 48.0))  # the blind spot: +8 y
    torch.testing.assert_close(scores.ages_years, torch.full((3,), 40.0))  # gone from the robust reading
    torch.testing.assert_close(world.ages(start + torch.tensor([0.0, 1.0])), scores.ages_years)

    env = make_env(
        world,
        "action.keep=[]",
        "action.num_corrections=0",
        "env.typical_set=false",
        auto_reset=False,
        num_envs=3,
    )
    env.reset_to(start, torch.full((3,), 48.0))
    direction = env.age_gradient / env.age_gradient.norm(dim=1, keepdim=True)
    torch.testing.assert_close(
        direction, torch.tensor([[1.0, 0.0]] * 3)
    )  # the walk follows the robust reading
    steps = torch.tensor([[0.0, 1.0], [8 / 6, 0.0], [8 / 6, 1.0]])  # blind spot; visible; both (clean 56)
    result = env.step_latent(steps)
    assert result.terminated.tolist() == [
        False,
        True,
        False,
    ]  # success needs the clean and the robust reading
    torch.testing.assert_close(env.clean_ages, torch.tensor([48.0, 48.0, 56.0]))


def test_tables_add_robust_success_only_for_a_world_with_a_robust_reading():
    from test_realness import SIZE, edits

    from agelatent.evaluation.metrics import edit_metrics

    start = torch.zeros(3, 3, SIZE, SIZE)
    result = edits(start, start, torch.tensor([40.0, 45.0, 60.0]))  # final ages 40 on the clean reading
    assert "robust_success_rate" not in edit_metrics(result, 0.5, 5.0)
    clean = torch.tensor([[40.0, 40.0, 40.0], [40.0, 44.0, 58.0]])
    result = dataclasses.replace(result, clean_ages=clean)  # ages (all 40): now the robust reading
    metrics = edit_metrics(result, 0.5, 5.0)
    assert metrics["success_rate"].tolist() == [1.0, 1.0, 1.0]  # today's column: the clean reading
    assert metrics["robust_success_rate"].tolist() == [1.0, 1.0, 0.0]  # the robust reading: 20 y short


@pytest.mark.parametrize("terminal", [False, True])
def test_the_step_limit_is_a_truncation_or_with_timeout_terminal_a_terminal_state(terminal):
    from conftest import make_env

    from agelatent.env.outcome import Outcome
    from agelatent.world import World

    world = World(CheckerGenerator(), CheckerPerception(), chunk_size=None)
    env = make_env(
        world, "action.keep=[]", "action.num_corrections=0", "env.typical_set=false", "env.max_steps=1",
        f"env.timeout_terminal={str(terminal).lower()}", auto_reset=False, num_envs=2,
    )  # fmt: skip
    env.reset_to(torch.zeros(2, 2), torch.tensor([70.0, 46.0]))
    result = env.step_latent(torch.tensor([[0.5, 0.0], [1.0, 0.0]]))  # 43 of 70 y: out of steps; 46: success
    assert result.terminated.tolist() == [terminal, True]
    assert result.truncated.tolist() == [not terminal, False]
    assert env.outcome.tolist() == [int(Outcome.TIMEOUT), int(Outcome.SUCCESS)]


def test_an_env_state_from_before_clean_ages_existed_resumes_with_its_ages_as_clean():
    from conftest import make_env

    from agelatent.world import World

    world = World(CheckerGenerator(), CheckerPerception(), chunk_size=None)
    env = make_env(world, "action.keep=[]", "action.num_corrections=0", auto_reset=False, num_envs=2)
    env.reset_to(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([60.0, 30.0]))
    old = {k: v for k, v in env.state_dict().items() if k != "clean_ages"}  # written before the field existed
    fresh = make_env(world, "action.keep=[]", "action.num_corrections=0", auto_reset=False, num_envs=2)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.clean_ages, env.ages)
