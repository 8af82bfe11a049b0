"""Shared fixtures: real pretrained models from the model store, CPU only, no network for W&B."""

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


@pytest.fixture(scope="session")
def model_files():
    """All pretrained weight files, fetched once per machine (cached afterwards)."""
    from agelatent import store

    store.fetch()
    return {name: store.model_path(name) for name in store.MODELS}


def cpu_config(name: str, *overrides: str):
    """A Hydra config from the repository's ``conf/`` on the CPU, as the console scripts compose it."""
    from agelatent.jobs import compose_config

    return compose_config(name, ["device=cpu", *overrides])


@pytest.fixture(scope="session")
def world(model_files):
    """The embedded world on the real models (CPU, torch runtime), built once per test session."""
    from agelatent.world import build_world

    return build_world(cpu_config("sample"))
