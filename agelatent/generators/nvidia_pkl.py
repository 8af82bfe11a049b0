"""Convert NVIDIA stylegan2-ada-pytorch ``.pkl`` generators to the rosinality checkpoint format, safely.

NVIDIA's pickles embed the Python source of their network classes and, when unpickled normally, ``exec``
it (``torch_utils.persistence``). We never do that: a restricted :class:`pickle.Unpickler` resolves only
a short list of names, each to a stand-in of our own that merely records data (``_reconstruct_persistent_obj``
-> a :class:`PersistentStub` holding the class name and attribute dict, ``dnnlib.util.EasyDict`` -> a dict),
plus the tensor-rebuilding functions that ``torch.load(weights_only=True)`` itself allows, and numpy's
*numeric scalars* (NVIDIA's layers keep gains such as ``weight_gain`` as numpy float64: rebuilt from their
type code and bytes, never through numpy's own unpickling). Any other global (``os.system``, numpy arrays,
an unknown class) is refused with :class:`UnsafePickleError` before anything runs.
The embedded source code is read as a string and discarded.

The generator's tensors are then renamed to rosinality/stylegan2-pytorch keys (the two implementations
share every convention: stored weights, learning-rate multipliers, modulation bias initialised at 1, the
un-flipped transposed up-convolution, the [1,3,3,1] filters), so :class:`StyleGAN2Generator` loads the
result. One behaviour does not carry over: NVIDIA's ``conv_clamp`` (activations clamped to ±256 in
the high-resolution layers) has no counterpart in the reference format and is dropped; it only acts on
extreme activations.

Usage: ``python -m agelatent.generators.nvidia_pkl network-snapshot.pkl stylegan2.pt``.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from agelatent.store import ModelFileError

__all__ = ["PersistentStub", "UnsafePickleError", "convert", "main", "read_nvidia_pkl"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list; nothing from it was executed."""


class PersistentStub:
    """What a ``torch_utils.persistence`` object unpickles to here: its class name and attribute dict."""

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access; data only here)."""


def _reconstruct_persistent_obj(meta: dict) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError(f"unexpected persistent-object record {type(meta).__name__}")
    return PersistentStub(str(meta.get("class_name")), meta["state"])  # meta["module_src"] is never run


def _storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes``: a tensor storage saved with torch.save, read weights-only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, *_metadata):
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"expected a tensor storage, got {type(storage).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
        return torch.empty(0, dtype=storage.dtype).set_(storage.untyped(), offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_state):
    return data  # a plain tensor is all the conversion needs


# numpy scalars and their dtypes, as NVIDIA's layers pickle them (``weight_gain = 1 / np.sqrt(fan_in)`` is a
# numpy float64): rebuilt here from the dtype's type code and raw bytes, numeric kinds only, without calling
# numpy's own reconstruction on the file's data.
_NUMPY_CODES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}


class _NumpyDType:
    """Stand-in for ``numpy.dtype(code, align, copy)`` + its pickled state: records the code and byte order."""

    def __init__(self, code, align=False, copy=True) -> None:
        if code not in _NUMPY_CODES:
            raise UnsafePickleError(
                f"refusing numpy dtype {code!r}: only numeric scalars ({sorted(_NUMPY_CODES)})"
            )
        self.code, self.order = code, "="

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "=", "|")):
            raise UnsafePickleError(f"unexpected numpy dtype state {state!r}")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order if self.order != "|" else "=")


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar(dtype, raw bytes)`` -> the plain Python number it holds."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise UnsafePickleError("unexpected numpy scalar record (expected a numeric dtype and its raw bytes)")
    kind = dtype.numpy()
    if len(data) != kind.itemsize:
        raise UnsafePickleError(f"numpy scalar of {len(data)} bytes for dtype {kind} ({kind.itemsize} bytes)")
    return np.frombuffer(data, kind)[0].item()


_ALLOWED = {
    ("numpy", "dtype"): _NumpyDType,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy >= 2 pickles
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1 pickles (NVIDIA's published files)
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,  # protocol-3 pickles (Python 3.7's default, NVIDIA's files) name it as a global
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only NVIDIA network pickles "
                f"(torch_utils.persistence objects, EasyDict, tensors) are read, and no code from them is run"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r}: not a plain NVIDIA network pickle")


def _tensors(stub: PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """``named_parameters`` + ``named_buffers`` of an unpickled module tree, by attribute path."""
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (stub.state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
    for name, child in (stub.state.get("_modules") or {}).items():
        if isinstance(child, PersistentStub):
            out.update(_tensors(child, f"{prefix}{name}."))
        elif child is not None:
            raise ValueError(f"unexpected sub-module {prefix}{name} of type {type(child).__name__}")
    return out


_DERIVED = re.compile(r"synthesis\.b\d+\.(\w+\.)?resample_filter|mapping\.w_avg")


def _rename(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """One NVIDIA generator tensor -> (rosinality key, tensor in its layout).

    None for buffers the reference format derives itself (filters) or keeps outside ``g_ema`` (``w_avg``);
    KeyError for a name with no counterpart.
    """
    if m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name):
        return f"style.{int(m[1]) + 1}.{m[2]}", tensor
    if name == "synthesis.b4.const":
        return "input.input", tensor[None]
    if _DERIVED.fullmatch(name):
        return None
    m = re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.+)", name)
    if m is None:
        raise KeyError(name)
    res, layer, field = int(m[1]), m[2], m[3]
    level = res.bit_length() - 4  # b8 -> level 0 (rosinality's convs.0/1, to_rgbs.0)
    same = lambda t: t
    if layer == "torgb":
        prefix = "to_rgb1" if res == 4 else f"to_rgbs.{level}"
        fields = {
            "weight": ("conv.weight", lambda t: t[None]),
            "bias": ("bias", lambda t: t.reshape(1, -1, 1, 1)),
            "affine.weight": ("conv.modulation.weight", same),
            "affine.bias": ("conv.modulation.bias", same),
        }
    else:
        index = 0 if res == 4 else 2 * level + (0 if layer == "conv0" else 1)
        prefix = "conv1" if res == 4 else f"convs.{index}"
        fields = {
            "weight": ("conv.weight", lambda t: t[None]),
            "bias": ("activate.bias", same),
            "noise_strength": ("noise.weight", lambda t: t.reshape(1)),
            "affine.weight": ("conv.modulation.weight", same),
            "affine.bias": ("conv.modulation.bias", same),
        }
        if field == "noise_const":  # noise images are numbered over all convolutions, 4x4 first
            return f"noises.noise_{0 if res == 4 else index + 1}", tensor[None, None]
    if field not in fields:
        raise KeyError(name)
    key, layout = fields[field]
    return f"{prefix}.{key}", layout(tensor)


def read_nvidia_pkl(path: str | Path) -> dict:
    """A stylegan2-ada-pytorch ``.pkl`` -> ``{"g_ema": rosinality state dict, "latent_avg": w_avg}``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"NVIDIA network pickle {path} does not exist")
    with open(path, "rb") as f:
        try:
            data = _RestrictedUnpickler(f).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except Exception as err:
            raise ModelFileError(
                f"{path} is not a readable NVIDIA network pickle ({type(err).__name__}: {err})"
            ) from err
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentStub):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path}: expected a stylegan2-ada-pytorch snapshot (a dict with a 'G_ema' network), found {found}; "
            "TensorFlow-era StyleGAN2 pickles need rosinality's convert_weight.py"
        )
    g = data["G_ema"]
    kwargs = g.state.get("_init_kwargs")  # the persistence wrapper's copy of the constructor's kwargs
    if not isinstance(kwargs, dict):
        raise ValueError(
            f"{path}: G_ema carries no constructor arguments (_init_kwargs), so its architecture cannot be "
            "checked; expected a network pickled by stylegan2-ada-pytorch's training loop or legacy.py"
        )
    synthesis_kwargs = kwargs.get("synthesis_kwargs") or {}
    if g.class_name != "Generator":
        raise ValueError(f"{path}: G_ema is a {g.class_name}, expected a StyleGAN2 Generator")
    if kwargs.get("c_dim", 0):
        raise ValueError(
            f"{path}: conditional generators (c_dim={kwargs['c_dim']}) have no rosinality equivalent"
        )
    if kwargs.get("img_channels", 3) != 3:
        raise ValueError(
            f"{path}: only RGB generators are supported, this one has {kwargs['img_channels']} channels"
        )
    if synthesis_kwargs.get("architecture", "skip") != "skip":
        raise ValueError(
            f"{path}: synthesis architecture {synthesis_kwargs['architecture']!r}; only 'skip' converts"
        )
    if kwargs.get("z_dim", 512) != kwargs.get("w_dim", 512):
        raise ValueError(
            f"{path}: z_dim {kwargs.get('z_dim')} != w_dim {kwargs.get('w_dim')}; rosinality needs them equal"
        )
    tensors = _tensors(g)
    size = int(
        kwargs.get("img_resolution")
        or max(int(m[1]) for k in tensors if (m := re.match(r"synthesis\.b(\d+)\.", k)))
    )
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in tensors.items():
        try:
            renamed = _rename(name, tensor.detach().float())
        except KeyError:
            unknown.append(name)
            continue
        if renamed is not None:
            state[renamed[0]] = renamed[1].contiguous().clone()
    if unknown:
        raise ValueError(
            f"{path}: G_ema tensors with no StyleGAN2 counterpart (a StyleGAN3 or modified network?): {unknown[:12]}"
        )
    filters = [t for k, t in tensors.items() if k.endswith("resample_filter")]
    if not filters or any(f.shape != (4, 4) for f in filters):
        raise ValueError(
            f"{path}: expected 4x4 resampling filters ([1,3,3,1]), found {[tuple(f.shape) for f in filters]}"
        )
    kernel = filters[0].float() * 4  # rosinality stores its blur/upsample kernels with the upsampling gain 4
    for key in [k for k in state if re.fullmatch(r"convs\.\d+\.conv\.weight", k)]:
        if int(key.split(".")[1]) % 2 == 0:  # the up-convolution of each resolution
            state[key.replace("conv.weight", "conv.blur.kernel")] = kernel.clone()
    for level in range(size.bit_length() - 3):
        state[f"to_rgbs.{level}.upsample.kernel"] = kernel.clone()
    w_avg = tensors.get("mapping.w_avg")
    checkpoint = {"g_ema": state}
    if w_avg is not None:
        checkpoint["latent_avg"] = w_avg.detach().float().clone()
    return checkpoint


def convert(pkl_path: str | Path, out_path: str | Path) -> Path:
    """Write ``out_path`` (``torch.save``) in rosinality format from an NVIDIA ``.pkl``; return it."""
    checkpoint = read_nvidia_pkl(pkl_path)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(out.name + ".partial")
    torch.save(checkpoint, staged)
    staged.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pkl", help="stylegan2-ada-pytorch network snapshot (.pkl)")
    parser.add_argument("out", help="output checkpoint (.pt) in rosinality/stylegan2-pytorch format")
    args = parser.parse_args(argv)
    out = convert(args.pkl, args.out)
    print(f"wrote {out} (load it with generator.path={out})")


if __name__ == "__main__":
    main()
