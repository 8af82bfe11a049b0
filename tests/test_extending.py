"""docs/extending.md, done from outside the package: a generator, a perception, a reward term and an editor
written here, selected with ``_target_`` configs (YAML in a config directory of the user's own, added with
``hydra.searchpath``; the term and the editor as ``+`` overrides), then ``profile=debug`` training and an
evaluation end to end -- the way a researcher brings their own parts.

The tiny world is made so that it has something to learn: the "age" its perception reads is a smooth
function of the image, identity is the image's pooled colour pattern, and gender its green share.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import cpu_config
from torch import nn

from agelatent.editors import Editor
from agelatent.env.rewards import RewardTerm, Transition
from agelatent.generators import Generator
from agelatent.perception.base import FaceScores, Perception


class TinyGenerator(Generator):
    """z [B, 8] -> 3 x 16 x 16 images in [-1, 1] through a fixed random linear map (seeded: same weights
    in every process)."""

    def __init__(self, *, latent_dim: int, seed: int) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, 16
        weights = torch.randn(3 * 16 * 16, latent_dim, generator=torch.Generator().manual_seed(seed))
        self.map = nn.Linear(latent_dim, 3 * 16 * 16, bias=False)
        self.map.weight.data.copy_(weights / math.sqrt(latent_dim))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.map(latents)).reshape(-1, 3, 16, 16)


class TinyPerception(Perception):
    """Age: 40 + 35 tanh(top half's brightness - bottom half's); identity: the 4 x 4 pooled red and blue
    pattern (cosine similarity); P(male): the green share. Differentiable throughout."""

    age_range = (0.0, 80.0)
    identity_dim = 32

    def __init__(self, *, same_person_similarity: float) -> None:
        super().__init__()
        self.same_person_similarity = same_person_similarity

    def ages(self, images: torch.Tensor) -> torch.Tensor:
        top, bottom = images[:, :, :8].mean((1, 2, 3)), images[:, :, 8:].mean((1, 2, 3))
        return 40.0 + 35.0 * torch.tanh(3.0 * (top - bottom))

    def forward(self, images: torch.Tensor) -> FaceScores:
        pattern = nn.functional.adaptive_avg_pool2d(images[:, [0, 2]], 4).flatten(1)
        return FaceScores(
            ages_years=self.ages(images),
            identity=nn.functional.normalize(pattern, dim=1),
            p_male=torch.sigmoid(4.0 * images[:, 1].mean((1, 2))),
        )


class GenderKept(RewardTerm):
    """A new reward term: how far P(male) has moved from the start face (negative)."""

    def value(self, t: Transition) -> torch.Tensor:
        return -(t.p_male - t.start_p_male).abs()


class ProbeEditor(Editor):
    """A new editor from forward passes only: each step tries ±``step`` along ``directions`` random unit
    directions and takes the one that brings the age closest to the target (rows that have finished are
    not probed: the env ignores their steps)."""

    def __init__(self, *, step: float, directions: int, seed: int) -> None:
        if not step > 0 or directions < 1:
            raise ValueError(f"step must be > 0 and directions >= 1, got {step} and {directions}")
        self.step, self.directions = step, directions
        self.rng = torch.Generator().manual_seed(seed)

    def propose(self, env) -> torch.Tensor:
        u = torch.randn(self.directions, env.latent_dim, generator=self.rng).to(env.device)
        moves = torch.cat([u, -u]) / u.norm(dim=1).repeat(2)[:, None] * self.step  # [2K, d]
        rows = env.active.nonzero().flatten()
        candidates = (env.z[rows, None] + moves[None]).reshape(-1, env.latent_dim)  # [active * 2K, d]
        with torch.no_grad():
            ages = env.score(candidates, rows=rows.repeat_interleave(len(moves))).ages_years
        best = (ages.reshape(len(rows), -1) - env.targets[rows, None]).abs().argmin(1)
        step = torch.zeros_like(env.z)
        step[rows] = moves[best]
        return step


@pytest.fixture(scope="module")
def own_config_dir(tmp_path_factory):
    """A researcher's config directory: one YAML file per new part."""
    root = tmp_path_factory.mktemp("my_conf")
    (root / "generator").mkdir()
    (root / "generator" / "tiny.yaml").write_text(
        "_target_: test_extending.TinyGenerator\nlatent_dim: 8\nseed: 0\n"
    )
    (root / "perception").mkdir()
    (root / "perception" / "tiny.yaml").write_text(
        "_target_: test_extending.TinyPerception\nsame_person_similarity: 0.9\n"
    )
    return root


def own_parts(config_dir) -> list[str]:
    return [
        f"hydra.searchpath=[file://{config_dir}]",
        "generator=tiny",
        "perception=tiny",
        "identity.soft_threshold=0.8",  # cosine similarity of the tiny identity pattern
        "identity.hard_bound=0.6",
        "+reward.terms.gender_kept={_target_: test_extending.GenderKept, weight: 0.5}",
        "+editor_settings.probe={_target_: test_extending.ProbeEditor, step: 0.5, directions: 4, seed: 0}",
    ]


def test_a_new_generator_perception_reward_term_and_editor_train_and_evaluate(tmp_path, own_config_dir):
    from agelatent.cli.evaluate import run as evaluate_run
    from agelatent.cli.train import train
    from agelatent.runs import RunDir, run_job

    parts = own_parts(own_config_dir)
    cfg = cpu_config(
        "train", *parts, "profile=debug", "logger=none", f"paths.runs_dir={tmp_path}", "run_name=own"
    )
    run_dir = tmp_path / "own"
    run_job(cfg, run_dir, train)
    summary = json.loads(RunDir(run_dir).summary.read_text())
    assert summary["env_steps"] == 48 and summary["edits"] == 4
    with open(RunDir(run_dir).metrics) as f:
        rows = list(csv.DictReader(f))
    kept = [float(r["env/reward_gender_kept"]) for r in rows if r.get("env/reward_gender_kept")]
    assert kept and all(v <= 0 for v in kept) and any(v < 0 for v in kept)  # the new term was paid out

    eval_cfg = cpu_config(
        "eval", *parts, "evaluator=none", "logger=none", f"policy={run_dir}",
        "editors=[sac_policy,local_linear_walk,probe]", "protocol.num_faces=4", "protocol.targets=[20,60]",
    )  # fmt: skip
    rows = {r["editor"]: r for r in evaluate_run(eval_cfg, tmp_path / "eval")}
    assert set(rows) == {"sac_policy", "local_linear_walk", "probe"}
    for name in rows:
        assert rows[name]["edits"] == 8
    assert (tmp_path / "eval" / "grid_probe.png").is_file()
    with open(tmp_path / "eval" / "edits.csv") as f:
        edits = [e for e in csv.DictReader(f) if e["editor"] == "probe"]
    # it edits: in this smooth world, the best of 8 probes brings every face closer to its target
    assert all(float(e["age_error"]) < abs(float(e["start_age"]) - float(e["target"])) for e in edits)
    # and pays for its lookahead, per edit: the start, then per step 8 candidates and the step itself
    assert all(float(e["world_calls"]) == 1 + 9 * int(e["steps"]) for e in edits)


def test_a_generator_missing_a_hook_is_named_when_the_world_is_built(own_config_dir):
    from agelatent.world import World

    class NoPrior(nn.Module):  # a bare module: no sample_latents, typical_set, latent_space, photo_alignment
        latent_dim, resolution = 8, 16

        def forward(self, z):
            return z

    with pytest.raises(
        TypeError, match=r"lacks the hook\(s\) \['latent_space', 'photo_alignment', 'sample_latents'"
    ):
        World(NoPrior(), TinyPerception(same_person_similarity=0.9))


def test_a_perception_missing_a_hook_is_named_when_the_world_is_built():
    from agelatent.world import World

    class AgesOnly(nn.Module):
        age_range = (0.0, 80.0)

        def forward(self, images):
            return images

    with pytest.raises(TypeError, match=r"perception AgesOnly lacks the hook\(s\) \['identity_dim', "):
        World(TinyGenerator(latent_dim=8, seed=0), AgesOnly())


def test_an_editor_config_without_a_target_or_with_a_bad_setting_is_refused_before_any_work(own_config_dir):
    from agelatent.evaluation.comparison import validate_editors

    cfg = cpu_config("eval", *own_parts(own_config_dir), "editors=[probe]", "editor_settings.probe.step=0")
    with pytest.raises(ValueError, match=r"editor_settings.probe: step must be > 0"):
        validate_editors(cfg)
    cfg = cpu_config("eval", "+editor_settings.bare={step: 1}", "editors=[bare]")
    with pytest.raises(ValueError, match=r"editor_settings.bare has no _target_"):
        validate_editors(cfg)
