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
