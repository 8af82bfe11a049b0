"""The paper-grade world (StyleGAN2 + insightface) composed through Hydra exactly as a user would, on
random-weight stand-ins in the real file formats, and the whole stack on it: env, SAC, an editor, metrics.

The stand-ins are small (64 px, reduced widths) so this runs on CPU in seconds; the files are in the real
formats, so everything between the config and the numbers is the code a paper-grade run executes.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_config, make_env
from hydra.errors import InstantiationException

from agelatent.agent.sac import SACConfig, SACModule, sac_trainer
from agelatent.config import compose_config
from agelatent.editors import LocalLinearWalk, run_edits
from agelatent.env.batched import check_step_result
from agelatent.evaluation.metrics import summarise
from agelatent.generators import sample_latents as standard_normal
from agelatent.generators.stylegan2 import StyleGAN2Generator
from agelatent.perception.insightface_models import InsightFacePerception
from agelatent.testing.standins import write_insightface_pack, write_stylegan2_checkpoint
from agelatent.world import World, build_world

# insightface's estimate_norm calls skimage's deprecated SimilarityTransform.estimate.
_FILTER = pytest.mark.filterwarnings("ignore:.*estimate.*deprecated:FutureWarning")

SIZE, STYLE_DIM, N_MLP = 64, 64, 2
CHANNELS = {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}


pytestmark = [_FILTER, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_world")
    pack = write_insightface_pack(root / "buffalo_l")
    generator = write_stylegan2_checkpoint(
        root / "stylegan2-stand-in.pt", SIZE, channels=CHANNELS, style_dim=STYLE_DIM, n_mlp=N_MLP
    )
    return {"generator": str(generator), **pack}


def overrides(files, *extra: str, generator: bool = True, recognition: bool = True) -> list[str]:
    """What a user types: the two groups, the three file paths, anything else."""
    out = ["device=cpu", "generator=stylegan2_ffhq", "perception=insightface", "perception.ort_threads=1"]
    if generator:
        out.append(f"generator.path={files['generator']}")
    if recognition:
        out.append(f"perception.recognition_path={files['recognition']}")
    out.append(f"perception.genderage_path={files['genderage']}")
    return [*out, *extra]


def paper_world(files, *extra: str) -> World:
    return build_world(compose_config("sample", overrides(files, *extra)))


@pytest.fixture(scope="module")
def world(files):
    """As configured by default: onnxruntime perception, no chunking at this batch size."""
    return paper_world(files)


@pytest.fixture(scope="module")
def torch_world(files):
    """Differentiable perception (onnx2torch), and chunks of 3 so a batch of 5 is scored in two calls."""
    return paper_world(files, "perception.runtime=torch", "score_chunk=3")


#: the paper-grade world's identity thresholds (ArcFace cosine similarity)
PAPER = ("identity=arcface",)


# --- the world ----------------------------------------------------------------------------------------------
def test_the_config_builds_the_paper_world_from_the_files(world, torch_world):
    for w in (world, torch_world):
        assert isinstance(w.generator, StyleGAN2Generator) and isinstance(w.perception, InsightFacePerception)
        assert w.device == torch.device("cpu")
        assert (w.generator.resolution, w.generator.channels) == (SIZE, CHANNELS)
        assert (w.generator.latent_space, w.generator.truncation, w.latent_dim) == ("w", 0.7, STYLE_DIM)
        assert w.same_person_similarity == 0.28  # insightface's cosine rule, not the embedded world's
        assert not any(p.requires_grad for p in w.parameters())
    assert (world.perception.runtime, world.perception.differentiable) == ("onnxruntime", False)
    assert (torch_world.perception.runtime, torch_world.perception.differentiable) == ("torch", True)
    assert (world.chunk_size, torch_world.chunk_size) == (32, 3)


def test_score_shapes_ranges_and_devices(world, torch_world):
    latents = world.sample_latents(range(5))
    scores = world.score(latents)
    assert scores.images.shape == (5, 3, SIZE, SIZE)
    assert scores.ages_years.shape == scores.p_male.shape == (5,)
    assert scores.identity.shape == (5, 512)
    for t in (scores.images, scores.ages_years, scores.identity, scores.p_male):
        assert t.device == world.device and t.dtype == torch.float32 and not t.requires_grad
        assert torch.isfinite(t).all()
    torch.testing.assert_close(scores.identity.norm(dim=-1), torch.ones(5))
    assert ((scores.p_male > 0) & (scores.p_male < 1)).all()
    sim = world.identity_similarity(scores.identity[:, None], scores.identity[None])
    torch.testing.assert_close(sim.diagonal(), torch.ones(5))
    assert (sim.abs() <= 1 + 1e-5).all() and sim[0, 1] < 1 - 1e-4  # distinct faces, distinct embeddings
    # The torch runtime, scoring the same latents in chunks of 3, agrees with onnxruntime in one call.
    chunked = torch_world.score(latents)
    torch.testing.assert_close(chunked.images, scores.images)
    torch.testing.assert_close(chunked.ages_years, scores.ages_years, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chunked.identity, scores.identity, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked.p_male, scores.p_male, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(world.ages(latents), scores.ages_years)


def test_w_space_latents_are_mapped_truncated_and_reproducible(world, torch_world):
    batch = world.sample_latents([3, 7, 11])
    alone = world.sample_latents([7])
    assert batch.shape == (3, STYLE_DIM) and batch.device == world.device
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(torch_world.sample_latents([3, 7, 11]), batch, rtol=0, atol=0)  # same file
    # The world delegates to the generator: W latents are the mapped, truncated image of the seeds' z.
    z = standard_normal([3, 7, 11], STYLE_DIM)
    g = world.generator
    torch.testing.assert_close(batch, g.truncate(g.mapping(z)), rtol=1e-5, atol=1e-5)
    assert (batch - z).abs().max() > 0.1
    torch.testing.assert_close(world.generate(alone)[0], world.generate(batch)[1], rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_latents_with_the_torch_runtime(torch_world, world):
    latents = torch_world.sample_latents(range(5)).requires_grad_(True)
    scores = torch_world.score(latents, with_grad=True)  # two chunks: gradients cross the concatenation
    (age_grad,) = torch.autograd.grad(scores.ages_years[4], latents, retain_graph=True)
    assert torch.isfinite(age_grad).all() and age_grad[4].abs().sum() > 0
    assert (age_grad[:4] == 0).all()  # each face's age depends on its own latent only
    (scores.p_male.sum() + scores.identity[:, :16].sum()).backward()
    assert torch.isfinite(latents.grad).all() and (latents.grad.abs().sum(dim=1) > 0).all()
    assert all(p.grad is None for p in torch_world.parameters())
    with torch.no_grad():
        assert not torch_world.score(latents).ages_years.requires_grad
    assert not world.score(latents, with_grad=True).ages_years.requires_grad  # onnxruntime: no gradients


# --- the stack on it ----------------------------------------------------------------------------------------
def test_local_linear_env_with_autograd_directions(torch_world):
    env = make_env(
        torch_world, *PAPER, "env.observe_latent=true", "action.num_corrections=2", num_envs=3, max_steps=2
    )
    obs = env.reset(seed=0)
    # the latent, 8 scalars, log |g| and the kept quantities', P(male) and its change, ArcFace's 512 offsets
    assert obs.shape == (3, 2 * STYLE_DIM + 9 + 2 + 2 + 512) and env.action_dim == 3
    # ĝ is the true local age gradient: a small step along it changes age as linearised.
    grad = env.age_gradient.clone()
    assert torch.isfinite(grad).all() and (grad.norm(dim=1) > 0).all()
    step = 1e-3 * grad / grad.norm(dim=1, keepdim=True)
    with torch.no_grad():
        change = torch_world.ages(env.z + step) - torch_world.ages(env.z - step)
    torch.testing.assert_close(change, 2 * 1e-3 * grad.norm(dim=1), rtol=0.05, atol=1e-5)
    ended = 0
    for k in range(3):
        actions = torch.rand(3, env.action_dim, generator=torch.Generator().manual_seed(k)) * 2 - 1
        result = env.step(actions)
        check_step_result(env, result)
        ended += int(result.done.sum())
    assert ended >= 3  # max_steps=2: every row finished (and restarted) at least once
    assert env.world_calls == 3 + 3 * 3 + ended  # latents scored: reset, 3 steps, one restart per ending


def test_full_action_env_on_the_onnxruntime_world(world):
    env = make_env(world, *PAPER, "action=full", num_envs=3, max_steps=2)
    obs = env.reset(seed=1)
    assert obs.shape == (3, 2 * STYLE_DIM + 8 + 2 + 512) and env.action_dim == STYLE_DIM
    z0 = env.z.clone()
    result = env.step(torch.ones(3, STYLE_DIM))
    check_step_result(env, result)
    moved = (env.z - z0).norm(dim=1)
    assert (moved > 0).all() and torch.isfinite(result.reward).all()
    # autograd directions need the differentiable runtime; probes work with onnxruntime
    with pytest.raises(ValueError, match=r"perception\.runtime=torch"):
        make_env(world, *PAPER, num_envs=2)
    probes = make_env(
        world,
        *PAPER,
        "action.num_corrections=1",
        "env.age_direction.method=probes",
        "env.age_direction.num_probes=2",
        "action.keep=[]",  # probes give the age direction alone
        num_envs=2,
    )
    probes.reset(seed=2)
    check_step_result(probes, probes.step(torch.zeros(2, 2)))


def test_sac_trains_on_the_paper_world(torch_world):
    env = make_env(torch_world, *PAPER, "action.num_corrections=2", num_envs=4, max_steps=3)
    cfg = SACConfig.from_config(
        cpu_config(
            "train",
            "agent.total_env_steps=32",
            "agent.buffer_size=64",
            "agent.batch_size=8",
            "agent.learning_starts=8",
            "agent.updates_per_step=1",
            "agent.hidden_sizes=[32,32]",
        )
    )
    module = SACModule(env, cfg)
    before = {k: v.clone() for k, v in module.actor.state_dict().items()}
    trainer = sac_trainer(log_every_n_steps=2)
    trainer.fit(module)
    assert module.env_steps == 32
    assert module.num_updates == 7  # one per batched step from the one that fills 8 transitions
    after = module.actor.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    # Lightning switched modes around the world's env: the frozen networks stayed frozen.
    assert not torch_world.generator.training and not torch_world.perception.training
    assert not any(p.requires_grad for p in torch_world.parameters())
    assert env.episode_metrics()["episodes"] >= 4


def test_a_baseline_edit_and_its_summary_on_the_paper_world(torch_world):
    env = make_env(torch_world, *PAPER, "action.num_corrections=2", auto_reset=False, num_envs=3, max_steps=2)
    protocol = cpu_config("eval").protocol
    starts = torch_world.sample_latents(range(protocol.first_seed, protocol.first_seed + 3))
    walk = LocalLinearWalk.of_action(env.cfg.action)
    result = run_edits(env, walk, starts, torch.tensor([20.0, 40.0, 60.0]))
    assert result.latents.shape[1:] == (3, STYLE_DIM) and result.final_images.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(result.start_latents, starts)
    summary = summarise(result, env.cfg.identity.hard_bound, protocol)
    assert summary["edits"] == 3 and summary["world_calls_per_edit"] >= 2
    errors = (result.final_ages - result.targets).abs()
    assert summary["age_error"] == pytest.approx(float(errors.mean()))


# --- errors -------------------------------------------------------------------------------------------------
def test_missing_files_name_the_config_key(files, tmp_path):
    with pytest.raises(InstantiationException, match=r"generator\.path"):
        build_world(compose_config("sample", overrides(files, generator=False)))
    with pytest.raises(InstantiationException, match=r"perception\.recognition_path is not set"):
        build_world(compose_config("sample", overrides(files, recognition=False)))
    nowhere = tmp_path / "nowhere" / "genderage.onnx"
    with pytest.raises(InstantiationException, match=r"perception\.genderage_path=.*nowhere.*no such file"):
        build_world(compose_config("sample", [*overrides(files), f"perception.genderage_path={nowhere}"]))


def test_typical_set_and_inversion_in_w_plus_reaching_what_w_cannot(files):
    """The inversion's typicality term in StyleGAN2's spaces: prior samples sit on the typical set (penalty
    near 0), ``w_avg`` itself does not (exactly 1). A target mixing two faces' w per layer lies outside W:
    inverted with the same budget, W+ gets closer to it than W, and W closer than Z (measured on these
    stand-ins, pixel MSE: Z 0.26, W 0.19, W+ 0.09)."""
    from agelatent.photos.invert import InversionSettings, invert

    errors = {}
    target = None
    for space in ("w+", "w", "z"):
        world = paper_world(files, "perception.runtime=torch", f"generator.latent_space={space}")
        typical = world.typical_set()
        assert typical.penalty(world.sample_latents(range(64))).mean() < 0.1
        if space != "z":
            assert typical.block == STYLE_DIM and typical.radius > 0
            assert torch.allclose(typical.penalty(typical.centre[None]), torch.ones(1))
        if target is None:  # w+: the first half of the layers from one face, the rest from another
            a, b = world.sample_latents([101, 202]).reshape(2, world.generator.n_latent, STYLE_DIM)
            half = world.generator.n_latent // 2
            with torch.no_grad():
                target = world.generator(torch.cat([a[:half], b[half:]]).reshape(1, -1))[0]
        settings = InversionSettings(
            steps=40, restarts=2, lr=0.05, pixel_weight=1.0, identity_weight=0.0, prior_weight=0.1, seed=0
        )
        result = invert(world, target, settings)
        assert result.latent.shape == (world.latent_dim,)
        errors[space] = float((result.image - target).pow(2).mean())
    assert errors["w+"] < 0.8 * errors["w"] and errors["w"] < errors["z"], errors


def test_edit_runs_on_the_paper_world_ffhq_aligned_in_w_plus(files, tmp_path):
    """agelatent-edit's code path on StyleGAN2 + insightface (stand-ins): a real photo detected, cut with
    FFHQ's alignment (the StyleGAN2 default; 68 landmarks), inverted into W+, edited, written with its latent."""
    import csv

    import skimage.data
    from PIL import Image

    from agelatent.cli.edit import run as edit_run

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    cfg = cpu_config(
        "edit", *overrides(files), f"photo={tmp_path / 'astronaut.png'}", "generator.latent_space=w+",
        "inversion.steps=2", "inversion.restarts=1", "inversion.identity_weight=0", "targets=[40]",
        "editors=[random_walk]", "paste_back=false",
    )  # fmt: skip
    rows = edit_run(cfg, tmp_path / "out")
    assert len(rows) == 1 and rows[0]["target"] == "40"
    with open(tmp_path / "out" / "edits.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (tmp_path / "out" / "astronaut_face0.png").is_file()
    saved = torch.load(tmp_path / "out" / "astronaut_face0_latent.pt", weights_only=True)
    assert saved["alignment"] == "ffhq" and saved["latent_space"] == "w+"
    assert saved["latent"].shape == (
        STYLE_DIM * StyleGAN2Generator(SIZE, STYLE_DIM, N_MLP, channels=CHANNELS).n_latent,
    )
    with pytest.raises(
        ValueError, match=r"a w\+ latent of size \d+, but this world edits z latents of size 100"
    ):
        edit_run(cpu_config("edit", f"latent={tmp_path / 'out' / 'astronaut_face0_latent.pt'}"), tmp_path)
    with pytest.raises(ValueError, match=r"template must be null .* got"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'astronaut.png'}", "template=[[0.5,0.5]]"), tmp_path)
    with pytest.raises(ValueError, match=r"alignment must be auto or one of template, ffhq"):
        edit_run(cpu_config("edit", f"photo={tmp_path / 'astronaut.png'}", "alignment=celeba"), tmp_path)
