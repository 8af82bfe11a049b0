"""No loading path runs code from a file: a checkpoint or generator carrying a malicious pickle (an
``os.system`` reduce) is refused by resume, ``policy=``, ``generator.path=`` (``.pt`` and NVIDIA ``.pkl``)
and the DCGAN path, each naming the file, and nothing runs. Truncated files get their own message."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import cpu_config

from agelatent.store import ModelFileError, UnsafeFileError


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path):
    """(a torch checkpoint whose unpickling would create ``marker``, marker)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Exploit(marker)}, path)
    yield path, marker
    assert not marker.exists(), "code from the file ran"


def test_a_resumed_checkpoint_that_would_run_code_is_refused_before_any_model_loads(tmp_path, evil):
    from agelatent.cli.train import train

    path, _ = evil
    run_dir = tmp_path / "dbg"
    (run_dir / "checkpoints").mkdir(parents=True)
    os.replace(path, run_dir / "checkpoints" / "last.ckpt")
    cfg = cpu_config("train", "profile=debug", f"paths.runs_dir={tmp_path}", "run_name=dbg", "logger=none")
    with pytest.raises(
        UnsafeFileError, match=r"checkpoint to resume from .*last\.ckpt .*posix\.system.*resume=false"
    ):
        train(cfg, run_dir)


def test_a_policy_that_would_run_code_is_refused(evil):
    from agelatent.editors.policy import load_actor

    path, _ = evil
    with pytest.raises(UnsafeFileError, match=r"policy checkpoint .*evil\.ckpt .*nothing from it ran"):
        load_actor(path, env=None)


def test_generator_files_that_would_run_code_are_refused(tmp_path, evil):
    from agelatent.generators.dcgan import DCGANGenerator
    from agelatent.generators.nvidia_pkl import UnsafePickleError
    from agelatent.generators.stylegan2 import StyleGAN2Generator

    path, marker = evil
    with pytest.raises(UnsafeFileError, match=r"StyleGAN2 checkpoint \(generator.path\) .*evil\.ckpt"):
        StyleGAN2Generator.from_checkpoint(path)
    with pytest.raises(UnsafeFileError, match=r"DCGAN generator .*evil\.ckpt"):
        DCGANGenerator.pretrained(path)
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": _Exploit(marker)}))
    with pytest.raises(
        UnsafePickleError, match=r"network-snapshot\.pkl: refusing to unpickle global (posix|os)\.system"
    ):
        StyleGAN2Generator.from_checkpoint(pkl)


def test_a_truncated_checkpoint_is_named_as_such(tmp_path):
    from agelatent.editors.policy import load_actor

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
        ModelFileError, match=r"policy checkpoint .*last\.ckpt is not a readable torch file -- truncated"
    ):
        load_actor(path, env=None)
