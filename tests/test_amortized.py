"""The amortized policy: semantic-basis actions that need no gradients, demonstrations from a teacher editor,
behaviour cloning, and a trained policy evaluated through onnxruntime sessions."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from conftest import assert_train_refuses, cpu_config, make_env

from agelatent.agent.imitation import (
    Demonstrations,
    DemonstrationsConfig,
    behaviour_clone,
    collect_demonstrations,
)
from agelatent.agent.networks import SquashedGaussianActor
from agelatent.cli.evaluate import run as evaluate
from agelatent.cli.train import train
from agelatent.editors import build_editor
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.evaluation.paired import edit_outcomes

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small ridge fit keeps the semantic basis cheap here (the default fits 2000 latents)
SMALL_BASIS = ("editor_settings.global_direction.num_samples=200",)


def settings(**fields) -> DemonstrationsConfig:
    base = dict(
        teacher="semantic_walk",
        episodes=6,
        batch_episodes=4,
        epochs=0,
        batch_size=64,
        lr=1e-3,
        holdout=0.1,
        replay=True,
    )
    return DemonstrationsConfig(**{**base, **fields})


def test_semantic_actions_move_the_latent_within_the_semantic_walks_basis(world):
    env = make_env(world, "action=semantic", *SMALL_BASIS, auto_reset=False, num_envs=3, typical_set=False)
    walk = build_editor("semantic_walk", cpu_config("train", *SMALL_BASIS).editor_settings.semantic_walk)
    walk.prepare(make_env(world, *SMALL_BASIS, auto_reset=False, num_envs=1))
    assert env.action_dim == 17 and env.observation_dim == 2 * 100 + 8 + 2 + 128
    torch.testing.assert_close(env.semantic, walk.basis)  # one basis, built by one function
    torch.testing.assert_close(env.semantic @ env.semantic.T, torch.eye(17), atol=1e-5, rtol=0)
    env.reset_to(world.sample_latents([1, 2, 3]), torch.tensor([25.0, 40.0, 55.0]))
    actions = torch.rand(3, 17, generator=torch.Generator().manual_seed(0)) * 2 - 1
    env.step(actions)
    moved = env.z - env.z0
    torch.testing.assert_close(moved, 0.25 * actions @ env.semantic)  # semantic_step_size 0.25
    torch.testing.assert_close(env.actions_for(moved), actions, atol=1e-5, rtol=0)
    assert env.world_calls == 6  # one forward per latent and step, no probes, no gradients


def test_demonstrations_record_the_teachers_steps_as_the_students_actions(world):
    """Each demonstration action moves the student's latent exactly as the teacher's step would (no clipping
    at this step size), and every recorded transition is one step of both envs."""
    cfg = cpu_config("train", "action=semantic", "action.semantic_step_size=4.0", *SMALL_BASIS)
    teacher = build_editor("semantic_walk", cfg.editor_settings.semantic_walk)
    demos = collect_demonstrations(world, cfg, teacher, settings(batch_episodes=6), seed=3)
    assert demos.clipped == 0.0 and demos.episodes == 6
    assert ((demos.actions >= -1) & (demos.actions <= 1)).all() and torch.isfinite(demos.rewards).all()
    d = world.latent_dim
    first = demos.obs[:, 2 * d + 7] == 0  # t / max_steps = 0: each episode's first transition
    assert int(first.sum()) == 6
    assert demos.world_calls == 2 * (6 + len(demos))  # both envs score the starts and every step
    starts = demos.obs[first, :d]  # the observation holds z first
    targets = demos.obs[first, 2 * d + 2] * 20.0 + 40.0  # ages observed as (age - 40) / 20
    student = LatentAgeEnv.from_config(world, cfg, auto_reset=False, num_envs=6)
    alone = LatentAgeEnv.for_edits(
        world, dataclasses.replace(student.cfg, action=teacher.env_action(student.cfg.action)), 6
    )
    alone.reset_to(starts, targets)
    torch.testing.assert_close(
        student.displacement(demos.actions[first]), teacher.propose(alone), atol=1e-4, rtol=0
    )
    assert int(demos.terminated.sum()) >= demos.successes  # successes end their episodes


def test_behaviour_cloning_learns_a_mapping_it_can_represent():
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2048, 12, generator=gen)
    weights = torch.randn(12, 3, generator=gen) / 3
    actions = torch.tanh(obs @ weights)
    demos = Demonstrations(
        obs=obs, actions=actions, rewards=torch.zeros(2048), next_obs=obs, terminated=torch.zeros(2048),
        episodes=1, successes=0, clipped=0.0, world_calls=0,
    )  # fmt: skip
    torch.manual_seed(0)
    actor = SquashedGaussianActor(12, 3, (64, 64), -5.0, 2.0)
    with torch.no_grad():
        before = float((actor.deterministic(obs) - actions).pow(2).mean())
    fit = behaviour_clone(actor, demos, settings(epochs=30, batch_size=128), seed=0)
    assert fit["nll_last"] < fit["nll_first"]
    assert fit["action_variance"] == pytest.approx(float(actions.var(0).mean()), rel=1e-3)
    assert fit["mse"] < 0.05 * fit["action_variance"] < before
    assert fit["heldout_mse"] < 0.1 * fit["action_variance"]  # a mapping it can represent generalises


def test_an_amortized_policy_trains_with_demonstrations_and_edits_through_onnxruntime(tmp_path, model_files):
    """Trained with a teacher's demonstrations in its replay buffer (debug profile), the semantic-basis policy
    is evaluated with the age and gender networks in onnxruntime sessions, which have no gradients: one world
    call per face and env step."""
    summary = train(
        cpu_config(
            "train",
            "profile=debug",
            f"paths.runs_dir={tmp_path}",
            "run_name=amortized",
            "logger=none",
            "experiment=amortized",
            *SMALL_BASIS,
            "demonstrations=walk",
            "demonstrations.teacher=semantic_walk",
            "demonstrations.episodes=4",
            "demonstrations.batch_episodes=4",
            "demonstrations.epochs=2",
        ),  # fmt: skip
        tmp_path / "amortized",
    )
    report = json.loads((tmp_path / "amortized" / "demonstrations.json").read_text())
    assert report["teacher"] == "semantic_walk" and report["episodes"] == 4
    assert report["transitions"] >= 4 and 0.0 <= report["teacher_success_rate"] <= 1.0
    assert summary["demonstrations"] == report
    out = tmp_path / "eval"
    eval_cfg = cpu_config(
        "eval",
        f"policy={tmp_path / 'amortized'}",
        "experiment=real_edits",
        "perception.runtime=onnxruntime",
        "editors=[sac_policy]",
        "evaluator=none",
        "protocol.num_faces=2",
        "protocol.targets=[25,55]",
    )
    (row,) = evaluate(eval_cfg, out)
    assert row["editor"] == "sac_policy"
    with open(out / "edits.csv") as handle:
        edits = list(csv.DictReader(handle))
    assert len(edits) == 4
    for edit in edits:  # the start face plus one forward per step
        assert float(edit["world_calls"]) == int(edit["steps"]) + 1
    # the per-edit outcomes that paired comparisons read back agree with the table's rates
    outcomes = edit_outcomes(out / "edits.csv", "sac_policy").values()
    assert sum(ok for ok, _ in outcomes) / 4 == pytest.approx(row["success_rate"])
    assert sum(robust for _, robust in outcomes) / 4 == pytest.approx(row["robust_success_rate"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["demonstrations=walk"], r"demonstrations teach an action=full or action=semantic policy"),
        (["action=semantic", "demonstrations.episodes=4"], r"demonstrations.episodes=4 needs a teacher"),
        (
            ["action=semantic", "demonstrations=walk", "demonstrations.teacher=walker"],
            r"demonstrations.teacher='walker' is not an editor of editor_settings",
        ),
        (
            ["action=semantic", "action.semantic_step_size=0"],
            r"action.semantic_step_size must be a finite number > 0",
        ),
        (
            [
                "action=semantic",
                "editor_settings.semantic_walk.num_directions=0",
                "editor_settings.semantic_walk.age_direction=false",
            ],
            r"action.semantic_basis is empty",
        ),
    ],
)
def test_bad_amortized_configs_fail_before_any_work(tmp_path, overrides, message):
    assert_train_refuses(tmp_path, overrides, message)
