"""The StyleGAN2 generator: rosinality/stylegan2-pytorch checkpoints load strictly and the forward pass
matches a plain, per-sample re-statement of the reference math, written here from the format's key names.

The real FFHQ weights are not obtainable here, so checkpoints are random weights saved in exactly that
format (``torch.save({"g_ema": state_dict, "latent_avg": ...})``) by :mod:`agelatent.testing.standins`, whose
key names and shapes are listed from the format independently of the module under test.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from agelatent.config import CONFIG_DIR
from agelatent.generators.stylegan2 import (
    StyleGAN2Generator,
    infer_architecture,
    modulated_conv2d,
    standard_channels,
    upfirdn2d,
)
from agelatent.store import ModelFileError
from agelatent.testing.standins import (
    BLUR_4X4,
    LR_MLP,
    random_stylegan2_state,
    save_stylegan2_checkpoint,
    stylegan2_shapes,
)

SIZE, STYLE_DIM, N_MLP = 32, 64, 2
CHANNELS = {4: 32, 8: 32, 16: 16, 32: 8}  # reduced widths: the format fixes names, not widths
N_LATENT = 2 * int(math.log2(SIZE)) - 2


@pytest.fixture(scope="module")
def small_state():
    return random_stylegan2_state(stylegan2_shapes(SIZE, STYLE_DIM, N_MLP, CHANNELS))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, small_state):
    return save_stylegan2_checkpoint(tmp_path_factory.mktemp("sg2") / "g.pt", small_state)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ references


def upfirdn_loops(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """upfirdn2d by definition on one 2-D plane: zero insertion, pad/crop, true convolution, decimation."""
    h, w = x.shape
    stuffed = np.zeros((h * up, w * up))
    for i in range(h):
        for j in range(w):
            stuffed[i * up, j * up] = x[i, j]
    p0, p1 = pad
    hp, wp = h * up + p0 + p1, w * up + p0 + p1
    padded = np.zeros((hp, wp))
    for i in range(hp):
        for j in range(wp):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[i, j] = stuffed[si, sj]
    kh, kw = k.shape
    out = np.zeros((hp - kh + 1, wp - kw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = sum(
                padded[i + a, j + b] * k[kh - 1 - a, kw - 1 - b] for a in range(kh) for b in range(kw)
            )
    return out[::down, ::down]


def upfirdn_shifts(x: torch.Tensor, k: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """The same definition, vectorised as a sum of shifted copies (no conv ops): fast enough for a forward."""
    b, c, h, w = x.shape
    stuffed = x.new_zeros(b, c, h * up, w * up)
    stuffed[:, :, ::up, ::up] = x
    padded = F.pad(stuffed, (pad[0], pad[1], pad[0], pad[1]))
    kh, kw = k.shape
    oh, ow = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    return sum(
        k[kh - 1 - a, kw - 1 - c_] * padded[:, :, a : a + oh, c_ : c_ + ow]
        for a in range(kh)
        for c_ in range(kw)
    )


def transposed_conv_by_zero_insertion(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Stride-2 transposed convolution of ``x`` [1, I, H, W] with ``weight`` [O, I, k, k], by definition."""
    _, c, h, w = x.shape
    k = weight.shape[-1]
    stuffed = x.new_zeros(1, c, 2 * h - 1, 2 * w - 1)
    stuffed[:, :, ::2, ::2] = x
    return F.conv2d(F.pad(stuffed, (k - 1,) * 4), weight.flip(-1, -2))  # full true convolution


def modulated_weight(weight: torch.Tensor, style: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """One sample's weight [O, I, k, k]: scale input channels by the style, renormalise each output."""
    wb = weight * style[None, :, None, None]
    if demodulate:
        wb = wb / torch.sqrt((wb**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return wb


def reference_mapping(state: dict, z: torch.Tensor, n_mlp: int) -> torch.Tensor:
    x = z / torch.sqrt((z**2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        weight, bias = state[f"style.{i}.weight"], state[f"style.{i}.bias"]
        x = x @ (weight * LR_MLP / math.sqrt(weight.shape[1])).T + bias * LR_MLP
        x = F.leaky_relu(x, 0.2) * math.sqrt(2)
    return x


def reference_synthesis(state: dict, ws: torch.Tensor, size: int) -> torch.Tensor:
    """Sample by sample, layer by layer, from the state dict's key names (``ws`` [B, n_latent, D])."""
    blur = torch.tensor(BLUR_4X4 * 4, dtype=torch.float32)

    def modconv(prefix, x, w, demodulate=True, up=False):
        weight = state[f"{prefix}.weight"][0]
        o, i, k, _ = weight.shape
        mod_w = state[f"{prefix}.modulation.weight"]
        style = mod_w @ w / math.sqrt(mod_w.shape[1]) + state[f"{prefix}.modulation.bias"]
        wb = modulated_weight(weight / math.sqrt(i * k * k), style, demodulate)
        if up:
            return upfirdn_shifts(transposed_conv_by_zero_insertion(x, wb), blur, 1, (1, 1))
        return F.conv2d(x, wb, padding=k // 2)

    def styled(prefix, x, w, noise, up=False):
        x = modconv(f"{prefix}.conv", x, w, up=up) + state[f"{prefix}.noise.weight"] * noise
        return F.leaky_relu(x + state[f"{prefix}.activate.bias"][None, :, None, None], 0.2) * math.sqrt(2)

    images = []
    for w in ws:
        x = styled("conv1", state["input.input"], w[0], state["noises.noise_0"])
        rgb = modconv("to_rgb1.conv", x, w[1], demodulate=False) + state["to_rgb1.bias"]
        for level in range(int(math.log2(size)) - 2):
            i = 2 * level + 1
            x = styled(f"convs.{2 * level}", x, w[i], state[f"noises.noise_{i}"], up=True)
            x = styled(f"convs.{2 * level + 1}", x, w[i + 1], state[f"noises.noise_{i + 1}"])
            out = (
                modconv(f"to_rgbs.{level}.conv", x, w[i + 2], demodulate=False)
                + state[f"to_rgbs.{level}.bias"]
            )
            rgb = out + upfirdn_shifts(rgb, blur, 2, (2, 1))
        images.append(rgb)
    return torch.cat(images)


# ------------------------------------------------------------------------------------------ building blocks


@pytest.mark.parametrize(
    ("up", "down", "pad", "kernel"),
    [
        (2, 1, (2, 1), BLUR_4X4 * 4),  # ToRGB skip upsampling
        (1, 1, (1, 1), BLUR_4X4 * 4),  # blur after the transposed convolution
        (1, 2, (1, 1), BLUR_4X4),  # downsampling (discriminator side of the format)
        (3, 2, (-1, 2), np.arange(12, dtype=float).reshape(3, 4) - 5),  # asymmetric kernel, crop, odd factors
    ],
)
def test_upfirdn2d_matches_the_definition_computed_with_loops(up, down, pad, kernel):
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    out = upfirdn2d(x, torch.tensor(kernel, dtype=torch.float32), up=up, down=down, pad=pad)
    expected = np.stack(
        [
            np.stack([upfirdn_loops(x[b, c].double().numpy(), kernel, up, down, pad) for c in range(3)])
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    if down == 1 and min(pad) >= 0 and kernel.shape == (4, 4):  # the test's own vectorised reference, too
        shifted = upfirdn_shifts(x, torch.tensor(kernel, dtype=torch.float32), up, pad)
        np.testing.assert_allclose(shifted.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_a_per_sample_convolution(upsample, demodulate):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 6, 6, generator=gen)
    weight = torch.randn(4, 5, 3, 3, generator=gen)
    styles = torch.randn(3, 5, generator=gen) + 1
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, upsample=upsample, padding=1)
    for b in range(3):
        wb = modulated_weight(weight, styles[b], demodulate)
        if upsample:
            expected = transposed_conv_by_zero_insertion(x[b : b + 1], wb)
        else:
            expected = F.conv2d(x[b : b + 1], wb, padding=1)
        torch.testing.assert_close(out[b : b + 1], expected, rtol=1e-5, atol=1e-5)
    if demodulate:  # demodulated weights have unit norm per output channel, whatever the style scale
        torch.testing.assert_close(modulated_conv2d(x, weight, styles * 7, upsample=upsample, padding=1), out)


# ------------------------------------------------------------------------------------------ loading


def test_the_module_has_exactly_the_format_keys_and_shapes_at_1024_config_f():
    with torch.device("meta"):
        model = StyleGAN2Generator(1024, 512, 8, channel_multiplier=2)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == stylegan2_shapes(1024, 512, 8, standard_channels(1024, 2))
    # NVIDIA's published parameter count of the config-f FFHQ generator
    assert sum(p.numel() for p in model.parameters()) == 30_370_060
    assert model.n_latent == 18 and model.num_layers == 17


@pytest.mark.parametrize(("size", "multiplier"), [(1024, 2), (256, 1), (512, 2), (64, 1)])
def test_architecture_is_inferred_from_the_state_dict(size, multiplier):
    shapes = stylegan2_shapes(size, 512, 8, standard_channels(size, multiplier))
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    arch = infer_architecture(state)
    assert (arch["size"], arch["style_dim"], arch["n_mlp"]) == (size, 512, 8)
    assert arch["channel_multiplier"] == multiplier
    assert arch["channels"] == standard_channels(size, multiplier)


def test_checkpoint_round_trips_strictly(ckpt, small_state, tmp_path):
    model = StyleGAN2Generator.from_checkpoint(ckpt, latent_space="w+", truncation=1.0)
    assert (model.resolution, model.style_dim, model.n_mlp, model.n_latent) == (
        SIZE,
        STYLE_DIM,
        N_MLP,
        N_LATENT,
    )
    assert model.channels == CHANNELS and model.latent_dim == N_LATENT * STYLE_DIM
    saved = model.state_dict()
    assert set(saved) == set(small_state)
    for key, value in small_state.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    latents = torch.randn(2, model.latent_dim, generator=torch.Generator().manual_seed(3))
    again = StyleGAN2Generator.from_checkpoint(
        save_stylegan2_checkpoint(tmp_path / "again.pt", saved), "w+", 1.0
    )
    torch.testing.assert_close(again(latents), model(latents), rtol=0, atol=0)


def test_forward_matches_the_reference_math_layer_by_layer(ckpt, small_state):
    model = StyleGAN2Generator.from_checkpoint(ckpt, latent_space="w+", truncation=1.0)
    ws = torch.randn(2, N_LATENT, STYLE_DIM, generator=torch.Generator().manual_seed(4))  # distinct rows
    images = model(ws.flatten(1))
    expected = reference_synthesis(small_state, ws, SIZE)
    assert images.shape == (2, 3, SIZE, SIZE) and images.dtype == torch.float32
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-4)
    z = torch.randn(5, STYLE_DIM, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        model.mapping(z), reference_mapping(small_state, z, N_MLP), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("edit", ["drop", "extra", "both"])
def test_missing_or_extra_keys_are_named(tmp_path, small_state, edit):
    state = dict(small_state)
    if edit in ("drop", "both"):
        del state["convs.3.noise.weight"]
    if edit in ("extra", "both"):
        state["convs.3.noise.strength"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected keys|missing keys") as err:
        StyleGAN2Generator.from_checkpoint(save_stylegan2_checkpoint(tmp_path / "bad.pt", state))
    message = str(err.value)
    assert ("convs.3.noise.weight" in message) == (edit in ("drop", "both"))
    assert ("convs.3.noise.strength" in message) == (edit in ("extra", "both"))


def test_a_wrong_shape_is_named(tmp_path, small_state):
    state = dict(small_state, **{"to_rgbs.1.bias": torch.zeros(1, 4, 1, 1)})
    with pytest.raises(ValueError, match=r"to_rgbs\.1\.bias \(1, 4, 1, 1\) \(expected \(1, 3, 1, 1\)\)"):
        StyleGAN2Generator.from_checkpoint(save_stylegan2_checkpoint(tmp_path / "bad.pt", state))


def test_file_without_g_ema_names_what_it_has(tmp_path, small_state):
    path = tmp_path / "g.pt"
    torch.save({"g": small_state, "d": {}}, path)
    with pytest.raises(ValueError, match=r"'g_ema'.*\[d, g\]"):
        StyleGAN2Generator.from_checkpoint(path)
    torch.save(small_state, path)
    with pytest.raises(ValueError, match="bare generator state dict"):
        StyleGAN2Generator.from_checkpoint(path)


@pytest.mark.parametrize("path", [None, "does/not/exist.pt"])
def test_missing_file_names_the_config_key_and_where_to_get_it(path):
    with pytest.raises(ModelFileError, match=r"generator\.path.*stylegan2-ffhq-config-f\.pt"):
        StyleGAN2Generator.from_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unreadable_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "g.pt"
    path.write_bytes(b"\x80\x04not a torch file")
    with pytest.raises(ModelFileError, match=r"g\.pt.*generator\.path"):
        StyleGAN2Generator.from_checkpoint(path)


def test_training_checkpoint_with_argparse_options_loads(tmp_path, small_state):
    # rosinality's train.py saves {"g", "d", "g_ema", ..., "args": argparse.Namespace}
    path = save_stylegan2_checkpoint(
        tmp_path / "010000.pt", small_state, args=argparse.Namespace(size=SIZE, r1=10.0)
    )
    assert StyleGAN2Generator.from_checkpoint(path).resolution == SIZE


def test_architecture_overrides_are_checked(ckpt):
    StyleGAN2Generator.from_checkpoint(ckpt, size=SIZE, style_dim=STYLE_DIM, n_mlp=N_MLP)
    with pytest.raises(ValueError, match=r"size=64 \(file: 32\).*n_mlp=8 \(file: 2\)"):
        StyleGAN2Generator.from_checkpoint(ckpt, size=64, n_mlp=8)
    with pytest.raises(ValueError, match="channel_multiplier=2"):
        StyleGAN2Generator.from_checkpoint(ckpt, channel_multiplier=2)


def test_loaded_generator_is_frozen_but_differentiable_in_its_latents(ckpt):
    model = StyleGAN2Generator.from_checkpoint(ckpt, latent_space="w")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    latents = model.sample_latents([0, 1]).requires_grad_(True)
    model(latents).square().mean().backward()
    assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------ latent spaces


@pytest.fixture(scope="module")
def spaces(ckpt):
    return {
        s: StyleGAN2Generator.from_checkpoint(ckpt, latent_space=s, truncation=0.7) for s in ("z", "w", "w+")
    }


def test_w_plus_with_equal_rows_equals_the_w_path(spaces):
    w = spaces["w"].sample_latents([3, 4])
    w_plus = spaces["w+"].sample_latents([3, 4])
    torch.testing.assert_close(w_plus, w.repeat(1, N_LATENT), rtol=0, atol=0)
    torch.testing.assert_close(spaces["w+"](w_plus), spaces["w"](w), rtol=1e-6, atol=1e-6)


def test_z_path_equals_mapping_truncation_then_w_path(spaces, small_state):
    model_z, model_w = spaces["z"], spaces["w"]
    z = model_z.sample_latents([5, 6, 7])
    assert z.shape == (3, STYLE_DIM) and model_z.latent_dim == STYLE_DIM
    w_avg = model_w.mean_w()
    w = w_avg + 0.7 * (reference_mapping(small_state, z, N_MLP) - w_avg)
    torch.testing.assert_close(model_w.sample_latents([5, 6, 7]), w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model_z(z), model_w(w), rtol=1e-5, atol=1e-5)


def test_mean_latent_is_deterministic_and_is_the_mean_mapped_latent(ckpt, spaces, small_state):
    again = StyleGAN2Generator.from_checkpoint(ckpt, latent_space="w", truncation=0.5)
    torch.testing.assert_close(again.mean_w(), spaces["w"].mean_w(), rtol=0, atol=0)
    z = torch.randn(8192, STYLE_DIM, generator=torch.Generator().manual_seed(99))  # an independent sample
    w = reference_mapping(small_state, z, N_MLP)
    err = (spaces["w"].mean_w() - w.mean(0)).abs()
    assert err.max() < 6 * w.std(0).max() / math.sqrt(4096)


def test_mean_latent_from_the_checkpoint(ckpt, tmp_path, small_state):
    model = StyleGAN2Generator.from_checkpoint(ckpt, truncation=0.5, mean_latent="checkpoint")
    torch.testing.assert_close(model.mean_w(), torch.load(ckpt, weights_only=True)["latent_avg"])
    path = tmp_path / "no_avg.pt"
    torch.save({"g_ema": small_state}, path)
    with pytest.raises(ValueError, match="latent_avg.*absent"):
        StyleGAN2Generator.from_checkpoint(path, mean_latent="checkpoint")


@pytest.mark.parametrize("space", ["z", "w", "w+"])
def test_truncation_zero_gives_the_mean_latent_image_for_every_seed(ckpt, space):
    model = StyleGAN2Generator.from_checkpoint(ckpt, latent_space=space, truncation=0.0)
    images = model(model.sample_latents(range(4)))
    mean_image = model.synthesis(model.mean_w()[None, None].expand(1, N_LATENT, -1))
    torch.testing.assert_close(images, mean_image.expand(4, -1, -1, -1), rtol=1e-5, atol=1e-5)
    untruncated = StyleGAN2Generator.from_checkpoint(ckpt, latent_space=space, truncation=1.0)
    different = untruncated(untruncated.sample_latents(range(2)))
    assert (different[0] - different[1]).abs().mean() > 1e-2


@pytest.mark.parametrize("space", ["z", "w", "w+"])
def test_seeds_are_reproducible_independent_of_batch(spaces, space):
    model = spaces[space]
    alone = model.sample_latents([7])
    batch = model.sample_latents([3, 7, 11])
    assert batch.shape == (3, model.latent_dim)
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(alone)[0], model(batch)[1], rtol=1e-5, atol=1e-5)
    assert (batch[0] - batch[2]).abs().sum() > 0


def test_noise_modes(ckpt):
    const = StyleGAN2Generator.from_checkpoint(ckpt, noise="const")
    latents = const.sample_latents([1])
    torch.testing.assert_close(const(latents), const(latents), rtol=0, atol=0)
    random = StyleGAN2Generator.from_checkpoint(ckpt, noise="random")
    assert (random(latents) - random(latents)).abs().max() > 1e-4


def test_bad_arguments_and_latent_shapes_are_named(ckpt, spaces):
    with pytest.raises(ValueError, match=r"\[B, 512\].*\(2, 64\)"):
        spaces["w+"](torch.zeros(2, STYLE_DIM))
    with pytest.raises(ValueError, match="latent_space"):
        StyleGAN2Generator.from_checkpoint(ckpt, latent_space="s")
    with pytest.raises(ValueError, match="truncation"):
        StyleGAN2Generator.from_checkpoint(ckpt, truncation=1.5)
    with pytest.raises(ValueError, match="noise"):
        StyleGAN2Generator.from_checkpoint(ckpt, noise="fixed")


def test_hydra_config_builds_the_generator_and_requires_a_path(ckpt):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("sample", overrides=["generator=stylegan2_ffhq"])
        assert cfg.generator.path is None
        with pytest.raises(InstantiationException, match=r"generator\.path"):
            instantiate(cfg.generator)
        cfg = compose("sample", overrides=["generator=stylegan2_ffhq", f"generator.path={ckpt}"])
    model = instantiate(cfg.generator)
    assert isinstance(model, StyleGAN2Generator)
    assert (model.latent_space, model.truncation, model.noise_mode) == ("w", 0.7, "const")


def test_a_256px_standard_width_generator_loads_without_arguments_and_runs(tmp_path):
    shapes = stylegan2_shapes(256, 512, 8, standard_channels(256, 1))
    path = save_stylegan2_checkpoint(tmp_path / "g256.pt", random_stylegan2_state(shapes, seed=6))
    model = StyleGAN2Generator.from_checkpoint(
        path, latent_space="w", truncation=0.7, mean_latent_samples=512
    )
    assert (model.resolution, model.latent_dim, model.n_latent) == (256, 512, 14)
    with torch.no_grad():
        images = model(model.sample_latents([0]))
    assert images.shape == (1, 3, 256, 256) and torch.isfinite(images).all()


@pytest.mark.gpu
@pytest.mark.parametrize("space", ["z", "w+"])
def test_cuda_forward_matches_cpu(ckpt, space):
    model = StyleGAN2Generator.from_checkpoint(ckpt, latent_space=space, truncation=0.7)
    latents = model.sample_latents(range(4))
    images = model(latents)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare full fp32
    try:
        model.to("cuda")
        torch.testing.assert_close(
            model.sample_latents(range(4), "cuda").cpu(), latents, rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(model(latents.cuda()).cpu(), images, rtol=1e-4, atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


# ------------------------------------------------------------------------------------------ NVIDIA .pkl


class _FakeEasyDict(dict):
    pass


def _fake_reconstruct(meta):  # what pickle records by name; never called here
    raise AssertionError("the converter must not call NVIDIA's reconstruction hook")


class _Persistent:
    """Pickles like a torch_utils.persistence object: (_reconstruct_persistent_obj, (meta,)), its state the
    module's ``__dict__`` as NVIDIA's training loop leaves it: parameters, buffers, sub-modules, the
    persistence wrapper's ``_init_args``/``_init_kwargs`` and the layer's own attributes (numpy gains)."""

    def __init__(self, class_name, params=None, buffers=None, modules=None, init_kwargs=None, **attrs):
        as_param = lambda t: torch.nn.Parameter(t.clone(), requires_grad=False)
        self.meta = {
            "type": "class",
            "version": 6,
            "module_src": "import pathlib\npathlib.Path('PWNED').touch()\n",  # must never run
            "class_name": class_name,
            "state": {
                "training": False,
                "_parameters": {k: as_param(v) for k, v in (params or {}).items()},
                "_buffers": {k: v.clone() for k, v in (buffers or {}).items()},
                "_non_persistent_buffers_set": set(),
                "_modules": dict(modules or {}),
                "_init_args": (),
                "_init_kwargs": dict(init_kwargs or {}),
                **attrs,
            },
        }

    def __reduce__(self):
        return _fake_reconstruct, (self.meta,)


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Make the pickler record NVIDIA's global names (torch_utils.persistence, dnnlib.util)."""
    import types

    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")
    _fake_reconstruct.__module__, _fake_reconstruct.__qualname__ = (
        persistence.__name__,
        "_reconstruct_persistent_obj",
    )
    _FakeEasyDict.__module__, _FakeEasyDict.__qualname__ = util.__name__, "EasyDict"
    persistence._reconstruct_persistent_obj, util.EasyDict = _fake_reconstruct, _FakeEasyDict
    for name, module in [
        ("torch_utils", types.ModuleType("torch_utils")),
        ("torch_utils.persistence", persistence),
    ]:
        monkeypatch.setitem(__import__("sys").modules, name, module)
    monkeypatch.setitem(__import__("sys").modules, "dnnlib", types.ModuleType("dnnlib"))
    monkeypatch.setitem(__import__("sys").modules, "dnnlib.util", util)


def nvidia_generator(state: dict, w_avg: torch.Tensor, size: int, n_mlp: int) -> _Persistent:
    """A stylegan2-ada-pytorch ``G_ema`` holding ``state``'s weights under NVIDIA's names and layouts."""
    fir = torch.tensor(BLUR_4X4, dtype=torch.float32)  # setup_filter([1,3,3,1]): normalised, no gain

    def fc(w, b):  # FullyConnectedLayer: weight_gain = lr_multiplier / np.sqrt(in_features), a numpy float64
        kwargs = {"in_features": w.shape[1], "out_features": w.shape[0], "bias_init": 1}
        attrs = {
            "activation": "linear",
            "weight_gain": np.float64(1.0) / np.sqrt(w.shape[1]),
            "bias_gain": 1.0,
        }
        return _Persistent(
            "FullyConnectedLayer", params={"weight": w, "bias": b}, init_kwargs=kwargs, **attrs
        )

    gains = {"act_gain": np.sqrt(np.float64(2.0)), "conv_clamp": None, "activation": "lrelu"}

    def layer(prefix, noise):
        return _Persistent(
            "SynthesisLayer",
            params={
                "weight": state[f"{prefix}.conv.weight"][0],
                "bias": state[f"{prefix}.activate.bias"],
                "noise_strength": state[f"{prefix}.noise.weight"][0],
            },
            buffers={"resample_filter": fir, "noise_const": state[f"noises.noise_{noise}"][0, 0]},
            modules={
                "affine": fc(
                    state[f"{prefix}.conv.modulation.weight"], state[f"{prefix}.conv.modulation.bias"]
                )
            },
            init_kwargs={"kernel_size": 3, "use_noise": True},
            **gains,
        )

    def torgb(prefix):
        return _Persistent(
            "ToRGBLayer",
            params={"weight": state[f"{prefix}.conv.weight"][0], "bias": state[f"{prefix}.bias"].flatten()},
            weight_gain=np.float64(1.0) / np.sqrt(state[f"{prefix}.conv.weight"].shape[2]),
            modules={
                "affine": fc(
                    state[f"{prefix}.conv.modulation.weight"], state[f"{prefix}.conv.modulation.bias"]
                )
            },
        )

    blocks = {
        "b4": _Persistent(
            "SynthesisBlock",
            params={"const": state["input.input"][0]},
            buffers={"resample_filter": fir},
            modules={"conv1": layer("conv1", 0), "torgb": torgb("to_rgb1")},
        )
    }
    for level in range(int(math.log2(size)) - 2):
        blocks[f"b{8 * 2**level}"] = _Persistent(
            "SynthesisBlock",
            buffers={"resample_filter": fir},
            modules={
                "conv0": layer(f"convs.{2 * level}", 2 * level + 1),
                "conv1": layer(f"convs.{2 * level + 1}", 2 * level + 2),
                "torgb": torgb(f"to_rgbs.{level}"),
            },
        )
    mapping = _Persistent(
        "MappingNetwork",
        buffers={"w_avg": w_avg},
        modules={
            f"fc{i}": fc(state[f"style.{i + 1}.weight"], state[f"style.{i + 1}.bias"]) for i in range(n_mlp)
        },
    )
    kwargs = dict(  # training_loop: construct_class_by_name(**G_kwargs, **common_kwargs) -> a plain dict
        z_dim=STYLE_DIM, c_dim=0, w_dim=STYLE_DIM, img_resolution=size, img_channels=3,
        mapping_kwargs=_FakeEasyDict(num_layers=n_mlp), synthesis_kwargs=_FakeEasyDict(architecture="skip"),
    )  # fmt: skip
    synthesis = _Persistent("SynthesisNetwork", modules=blocks)
    return _Persistent("Generator", modules={"synthesis": synthesis, "mapping": mapping}, init_kwargs=kwargs)


@pytest.fixture
def nvidia_pkl(tmp_path, small_state, nvidia_modules):
    import pickle

    w_avg = torch.randn(STYLE_DIM)
    snapshot = {
        "G": nvidia_generator(small_state, w_avg, SIZE, N_MLP),
        "D": _Persistent("Discriminator", params={"x": torch.ones(2)}),
        "G_ema": nvidia_generator(small_state, w_avg, SIZE, N_MLP),
        "augment_pipe": None,
        "training_set_kwargs": _FakeEasyDict(path="ffhq.zip", resolution=SIZE),
    }
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(snapshot, protocol=4))
    return path, w_avg


def test_nvidia_pkl_converts_to_the_rosinality_state_without_running_its_code(
    nvidia_pkl, ckpt, small_state, tmp_path, monkeypatch
):
    from agelatent.generators.nvidia_pkl import convert

    path, w_avg = nvidia_pkl
    monkeypatch.chdir(tmp_path)
    out = convert(path, tmp_path / "converted.pt")
    assert not (tmp_path / "PWNED").exists()
    converted = torch.load(out, weights_only=True)
    assert set(converted["g_ema"]) == set(small_state)
    for key, value in small_state.items():
        torch.testing.assert_close(converted["g_ema"][key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(converted["latent_avg"], w_avg, rtol=0, atol=0)
    # the .pkl also loads directly, with the same images as the rosinality checkpoint
    from_pkl = StyleGAN2Generator.from_checkpoint(path, latent_space="w+", truncation=1.0)
    from_pt = StyleGAN2Generator.from_checkpoint(ckpt, latent_space="w+", truncation=1.0)
    latents = torch.randn(2, from_pt.latent_dim, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(from_pkl(latents), from_pt(latents), rtol=0, atol=0)


def test_a_numpy_1_snapshot_converts_and_its_constructor_arguments_are_checked(
    tmp_path, small_state, nvidia_modules
):
    """NVIDIA's published pickles come from Python 3.7 and numpy 1 (protocol 3: ``builtins.set``,
    ``numpy.core.multiarray.scalar``); the architecture
    checks read the persistence wrapper's ``_init_kwargs``, so a conditional generator is refused."""
    import pickle

    from agelatent.generators.nvidia_pkl import read_nvidia_pkl

    g = nvidia_generator(small_state, torch.zeros(STYLE_DIM), SIZE, N_MLP)
    data = pickle.dumps({"G_ema": g}, protocol=3)  # Python 3.7's default, globals as text lines
    assert b"cnumpy._core.multiarray\nscalar\n" in data
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert set(read_nvidia_pkl(path)["g_ema"]) == set(small_state)

    g.meta["state"]["_init_kwargs"]["c_dim"] = 10
    path.write_bytes(pickle.dumps({"G_ema": g}))
    with pytest.raises(ValueError, match=r"conditional generators \(c_dim=10\)"):
        read_nvidia_pkl(path)
    del g.meta["state"]["_init_kwargs"]
    path.write_bytes(pickle.dumps({"G_ema": g}))
    with pytest.raises(ValueError, match="no constructor arguments"):
        read_nvidia_pkl(path)


def test_nvidia_pkl_with_foreign_code_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import os
    import pickle

    from agelatent.generators.nvidia_pkl import UnsafePickleError, read_nvidia_pkl

    class Exploit:
        def __reduce__(self):
            return os.system, ("touch PWNED",)

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Exploit()}))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        read_nvidia_pkl(path)
    with pytest.raises(UnsafePickleError, match="system"):
        StyleGAN2Generator.from_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    path.write_bytes(pickle.dumps({"G_ema": np.zeros(3)}))
    with pytest.raises(UnsafePickleError, match="numpy"):
        read_nvidia_pkl(path)


def test_nvidia_pkl_of_another_network_names_the_problem(tmp_path, small_state, nvidia_modules):
    import pickle

    from agelatent.generators.nvidia_pkl import read_nvidia_pkl

    g = nvidia_generator(small_state, torch.zeros(STYLE_DIM), SIZE, N_MLP)
    g.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["L0_36_512"] = _Persistent(
        "SynthesisLayer", params={"weight": torch.zeros(1)}
    )  # a StyleGAN3-style layer name
    path = tmp_path / "sg3.pkl"
    path.write_bytes(pickle.dumps({"G_ema": g}))
    with pytest.raises(ValueError, match=r"no StyleGAN2 counterpart.*synthesis\.L0_36_512\.weight"):
        read_nvidia_pkl(path)
    path.write_bytes(pickle.dumps({"G": g}))
    with pytest.raises(ValueError, match=r"'G_ema'.*\['G'\]"):
        read_nvidia_pkl(path)
