"""Closed-form semantic directions (SeFa) and the walk within them: unit-norm directions ranked by singular
value that reproduce the first layer's response (the real DCGAN, a StyleGAN2 stand-in in W and W+), and a
semantic walk whose every step stays in its basis."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cpu_config

from agelatent.editors import SemanticWalk, build_editor, run_edits
from agelatent.evaluation.comparison import editor_mdp
from agelatent.generators.sefa import semantic_directions
from agelatent.generators.stylegan2 import StyleGAN2Generator
from agelatent.testing.standins import random_stylegan2_state, save_stylegan2_checkpoint, stylegan2_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dcgan_directions_are_unit_ranked_and_reproduce_the_first_layers_response(world):
    generator = world.generator
    directions, sigma = semantic_directions(generator, 8)
    assert directions.shape == (8, generator.latent_dim)
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(directions @ directions.T, torch.eye(8), atol=1e-5, rtol=0)
    assert bool((sigma[:-1] >= sigma[1:]).all()) and sigma[-1] > 0

    def first_layer(z):  # transposed conv on the 1x1 latent, then the eval-mode BatchNorm
        return generator.main[1](generator.main[0](z[:, :, None, None])).flatten(1)

    z = world.sample_latents([1, 2])
    t = 0.5
    with torch.no_grad():
        moved = first_layer(z + t * directions[0]) - first_layer(z)
    torch.testing.assert_close(
        moved, (t * generator.first_layer_map() @ directions[0]).expand(2, -1), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(moved[0].norm(), t * sigma[0], rtol=1e-4, atol=1e-4)
    # no other unit direction moves the first layer more: the first is the top singular vector
    others = torch.nn.functional.normalize(
        torch.randn(64, generator.latent_dim, generator=torch.Generator().manual_seed(0)), dim=1
    )
    assert float((generator.first_layer_map() @ others.T).norm(dim=0).max()) < float(sigma[0])


@pytest.fixture(scope="module")
def stylegan2(tmp_path_factory):
    channels = {4: 32, 8: 32, 16: 16}
    state = random_stylegan2_state(stylegan2_shapes(16, 32, 2, channels))
    path = save_stylegan2_checkpoint(tmp_path_factory.mktemp("sefa") / "g.pt", state)
    return {s: StyleGAN2Generator.from_checkpoint(path, latent_space=s) for s in ("z", "w", "w+")}


def test_stylegan2_directions_move_the_style_affines_as_the_singular_values_say(stylegan2):
    g = stylegan2["w"]
    directions, sigma = semantic_directions(g, 4)
    w = g.sample_latents([0])
    t = 0.3
    affine = g.conv1.conv.modulation
    with torch.no_grad():
        moved = affine(w + t * directions[:1]) - affine(w)
    rows = affine.weight.shape[0]  # conv1's rows come first in the stacked map
    torch.testing.assert_close(moved[0], t * g.first_layer_map()[:rows] @ directions[0], atol=1e-5, rtol=1e-4)
    assert bool((sigma[:-1] >= sigma[1:]).all())
    # W+: each layer's affine reads its own block; a W direction repeated over the blocks has the same effect
    plus = stylegan2["w+"].first_layer_map()
    torch.testing.assert_close(plus @ directions[0].repeat(g.n_latent), g.first_layer_map() @ directions[0])
    with pytest.raises(NotImplementedError, match="use latent_space=w or w\\+"):
        semantic_directions(stylegan2["z"])


def test_every_semantic_walk_step_stays_in_its_basis(world):
    from agelatent.env.latent_age import LatentAgeEnv, LatentAgeEnvConfig

    cfg = cpu_config("eval", "editor_settings.semantic_walk.num_samples=200")
    walk = build_editor("semantic_walk", cfg.editor_settings.semantic_walk)
    assert isinstance(walk, SemanticWalk)
    # without the typical-set clamp a step is exactly what the editor proposed
    mdp = LatentAgeEnvConfig.from_config(cpu_config("train", "env.typical_set=false", "env.max_steps=2"))
    env = LatentAgeEnv.for_edits(world, editor_mdp(walk, mdp), 4)
    assert env.cfg.action.mode == "local_linear" and env.cfg.action.keep == ()
    result = run_edits(env, walk, world.sample_latents(range(10, 14)), torch.tensor([20.0, 70.0, 25.0, 65.0]))
    basis = walk.basis
    assert basis.shape == (1 + 16, world.latent_dim)
    torch.testing.assert_close(basis @ basis.T, torch.eye(17), atol=1e-5, rtol=0)
    steps = (result.latents[1:] - result.latents[:-1]).reshape(-1, world.latent_dim)
    assert float(steps.norm(dim=1).max()) > 0.1  # it moved
    assert float(steps.norm(dim=1).max()) <= walk.max_step_norm + 1e-5
    outside = steps - (steps @ basis.T) @ basis
    assert float(outside.norm(dim=1).max()) < 1e-4
    assert math.isfinite(float(result.final_ages.mean()))
