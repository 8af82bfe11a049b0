"""Shared fixtures: real pretrained models from the model store, CPU only, no network for W&B.

Every test object that has a config is built from the composed Hydra config (``conf/``), the way the
console scripts build it: :func:`cpu_config` composes, :func:`make_env` builds the MDP from it. A default
changed in ``conf/`` is therefore the default the tests check.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread while a module's tests run (request it, or ``pytestmark =
    pytest.mark.usefixtures("one_thread")``): small networks gain little from a second thread and CI's two
    cores are shared; on them, small convolutions run far faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_files():
    """All pretrained weight files, fetched once per machine (cached afterwards)."""
    from agelatent import store

    store.fetch()
    return {name: store.model_path(name) for name in store.MODELS}


def cpu_config(name: str, *overrides: str):
    """A Hydra config from the repository's ``conf/`` on the CPU, as the console scripts compose it."""
    from agelatent.config import compose_config

    return compose_config(name, ["device=cpu", *overrides])


def assert_train_refuses(tmp_path, overrides, message: str) -> None:
    """``agelatent-train`` with the debug profile and ``overrides`` raises a ValueError matching ``message``
    before it creates the run directory."""
    from agelatent.cli.train import train

    cfg = cpu_config("train", "profile=debug", f"paths.runs_dir={tmp_path}", "run_name=bad", *overrides)
    with pytest.raises(ValueError, match=message):
        train(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def load_experiment(name: str):
    """The module ``experiments/<name>.py`` (scripts, not a package), loaded by path for its tests."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def make_env(world, *overrides: str, auto_reset: bool = True, **fields):
    """The MDP as ``agelatent-train`` builds it from ``conf/train.yaml`` + Hydra ``overrides``, on ``world``;
    ``fields`` replace top-level env settings afterwards (e.g. ``num_envs`` to match a batch)."""
    from agelatent.env.latent_age import LatentAgeEnv

    return LatentAgeEnv.from_config(world, cpu_config("train", *overrides), auto_reset=auto_reset, **fields)


@pytest.fixture(scope="session")
def world(model_files):
    """The embedded world on the real models (CPU, torch runtime), built once per test session."""
    from agelatent.world import build_world

    return build_world(cpu_config("sample"))


class CheckpointSteps:
    """A training callback (``+callbacks.probe={_target_: conftest.CheckpointSteps}``) that reads
    ``checkpoints/last.ckpt`` after every batched step and records its env-step counter in ``SEEN``."""

    SEEN: list[int] = []

    def __new__(cls):
        import lightning as L
        import torch

        from agelatent.runs import RunDir

        class _Probe(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                path = RunDir(trainer.default_root_dir).checkpoint
                if path.is_file():
                    cls.SEEN.append(torch.load(path, weights_only=True)["sac"]["env_steps"])

        return _Probe()
