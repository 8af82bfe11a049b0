"""experiments/step_gate.py: its grid spans the policy's lever ranges, and the lever walk at one of its
settings moves real faces (the stiff step and the levers themselves: tests/test_levers.py)."""

from __future__ import annotations

import torch
from conftest import cpu_config, load_experiment, make_env

from agelatent.editors import build_editor
from agelatent.evaluation.comparison import editor_mdp

SMALL_BASIS = "editor_settings.global_direction.num_samples=200"


def test_the_gates_grid_spans_the_policys_lever_ranges():
    gate = load_experiment("step_gate")
    action = cpu_config("train").action
    assert max(gate.STIFFNESS) == action.max_stiffness and min(gate.STIFFNESS) == 0.0
    assert max(gate.SCALE) == action.max_scale and min(gate.SCALE) == 1 / action.max_scale
    assert set(gate.MIX) == {0.0, 0.5, 1.0}


def test_the_lever_walk_moves_real_faces_towards_their_targets(world):
    settings = cpu_config("eval", SMALL_BASIS).editor_settings.lever_walk
    editor = build_editor("lever_walk", {**settings, "stiffness": 10.0, "mix": 0.5, "scale": 1.0})
    walk_env = make_env(world, SMALL_BASIS, auto_reset=False, num_envs=4)
    env = type(walk_env).for_edits(world, editor_mdp(editor, walk_env.cfg), 4)
    assert env.levers and env.keep == ("gender",)
    env.reset_to(
        world.sample_latents([500_000, 500_001, 500_002, 500_003]), torch.tensor([60.0, 60.0, 20.0, 20.0])
    )
    before, calls = env.ages.clone(), env.world_calls
    step = editor.propose(env)
    assert float(step.norm(dim=1).max()) <= 0.5 + 1e-5  # the norm cap
    assert env.world_calls == calls  # a step is proposed from what the last world call measured
    env.step_latent(step)
    assert env.world_calls - calls == 4  # one forward per face, the sketch's backward passes included
    toward = (env.ages - before) * torch.sign(env.targets - before)
    assert int((toward > 0).sum()) >= 3
