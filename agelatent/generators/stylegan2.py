"""The paper-grade world's generator: StyleGAN2 (Karras et al. 2020) in plain PyTorch.

Our own implementation of the generator of rosinality/stylegan2-pytorch (``model.py``): it loads that
project's checkpoints (``torch.load(path)["g_ema"]``) strictly, with the same parameter and buffer names,
and reproduces its forward pass. Unlike the reference it has no custom CUDA/C++ ops: the FIR resampling
(``upfirdn2d``) and the biased leaky ReLU are written with ordinary torch ops, so nothing is compiled at
import time and the same code runs on CPU and GPU.

The architecture (resolution, channel widths, style size, mapping depth) is read off the state dict, so
any size or channel multiplier loads without extra arguments. Three latent spaces are offered:

- ``z``: ``[B, style_dim]`` standard normal; the forward pass maps, truncates and synthesises.
- ``w``: ``[B, style_dim]`` mapped latents; :meth:`StyleGAN2Generator.sample_latents` maps and truncates.
- ``w+``: ``[B, n_latent * style_dim]``, one ``w`` per synthesis input, flattened row-major.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agelatent.generators.base import Generator
from agelatent.generators.latents import TypicalSet
from agelatent.generators.latents import sample_latents as _standard_normal
from agelatent.store import ModelFileError, load_weights_only

__all__ = ["StyleGAN2Generator", "upfirdn2d", "fir_kernel", "modulated_conv2d", "standard_channels"]

LatentSpace = Literal["z", "w", "w+"]
NoiseMode = Literal["const", "random"]

_OBTAIN = (
    "Set generator.path to a StyleGAN2 checkpoint in rosinality/stylegan2-pytorch format (a torch.save dict "
    "with key 'g_ema'), e.g. the converted FFHQ model stylegan2-ffhq-config-f.pt (1024x1024, channel "
    "multiplier 2) linked from that project's README, or to an NVIDIA stylegan2-ada-pytorch .pkl (read "
    "without running its code; `python -m agelatent.generators.nvidia_pkl IN.pkl OUT.pt` converts it once). "
    "TensorFlow-era NVIDIA .pkl files need rosinality's convert_weight.py."
)


def standard_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The channel widths per resolution that rosinality's ``Generator`` builds (512 up to 32x32)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512}
    for res, base in ((64, 256), (128, 128), (256, 64), (512, 32), (1024, 16)):
        table[res] = base * channel_multiplier
    res = 2048
    while res <= size:  # beyond 1024 the reference has no entry; continue its halving pattern
        table[res] = max(1, table[res // 2] // 2)
        res *= 2
    return {r: c for r, c in table.items() if r <= size}


# ----------------------------------------------------------------------------------------------------------
# Functional building blocks (pure torch)


def fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum to ``gain`` (``[1,3,3,1]`` -> 4x4)."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = torch.outer(k, k)
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with a 2-D FIR kernel, keep every ``down``-th sample.

    ``x`` ``[B, C, H, W]``; ``pad = (before, after)`` on both axes (negative values crop). The filter is
    applied as a true convolution (kernel flipped), channel by channel, as in the reference ``upfirdn2d``.
    Output size: ``(H * up + before + after - kh) // down + 1``.
    """
    b, c, h, w = x.shape
    if up > 1:  # sample i lands at i * up, followed by up - 1 zeros
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None]
    y = F.conv2d(x.reshape(b * c, 1, x.shape[2], x.shape[3]), weight)
    y = y.reshape(b, c, y.shape[2], y.shape[3])
    return y[:, :, ::down, ::down] if down > 1 else y


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, slope: float = 0.2, gain: float = 2**0.5):
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``, the reference's ``fused_leaky_relu`` (bias on dim 1)."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, slope) * gain


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    upsample: bool = False,
    padding: int = 0,
) -> torch.Tensor:
    """StyleGAN2 weight (de)modulation with one grouped convolution for the whole batch.

    ``x`` ``[B, I, H, W]``; ``weight`` ``[O, I, k, k]`` (already multiplied by its equalised-lr scale);
    ``styles`` ``[B, I]``. Each sample b is convolved with ``weight * styles[b]`` (per input channel),
    rescaled per output channel to unit norm when ``demodulate``. ``upsample`` uses a stride-2 transposed
    convolution (the caller blurs afterwards), otherwise a stride-1 convolution with ``padding``.
    """
    b, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    wb = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    x = x.reshape(1, b * c_in, h, w)
    if upsample:
        wt = wb.transpose(1, 2).reshape(b * c_in, c_out, kh, kw)  # conv_transpose2d wants [in, out/g, k, k]
        y = F.conv_transpose2d(x, wt, stride=2, groups=b)
    else:
        y = F.conv2d(x, wb.reshape(b * c_out, c_in, kh, kw), padding=padding, groups=b)
    return y.reshape(b, c_out, y.shape[2], y.shape[3])


# ----------------------------------------------------------------------------------------------------------
# Modules whose attribute names mirror the reference, so the checkpoint's keys load as they are


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as ``N(0, 1) / lr_mul``, scaled at use.

    Keys: ``weight`` ``[out, in]``, ``bias`` ``[out]``. With ``activation`` the bias goes through the
    biased leaky ReLU (as in the reference), otherwise it is added plainly.
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation=False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR low-pass filter (``kernel`` buffer, 4x4 for ``[1,3,3,1]``) with fixed padding."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, gain=upsample_factor**2))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip path (``kernel`` buffer, gain 4 to keep the DC level)."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel(taps, gain=factor**2))
        self.factor = factor
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Keys: ``weight`` ``[1, O, I, k, k]``, ``modulation.{weight,bias}``, and ``blur.kernel`` if upsampling."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.demodulate = demodulate
        self.padding = kernel_size // 2
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        if upsample:
            # the transposed conv yields 2H + k - 2 samples; this padding trims the blur back to 2H
            factor = 2
            p = (len(blur_taps) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = modulated_conv2d(
            x,
            self.weight[0] * self.scale,
            self.modulation(w),
            demodulate=self.demodulate,
            upsample=self.upsample,
            padding=self.padding,
        )
        return self.blur(y) if self.upsample else y


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool, blur_taps) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, 3, style_dim, upsample=upsample, blur_taps=blur_taps
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias, plus the upsampled RGB of the level below."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool, blur_taps) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        return out if skip is None else out + self.upsample(skip)


# ----------------------------------------------------------------------------------------------------------
# The generator


class StyleGAN2Generator(Generator):
    """StyleGAN2 generator, latents ``[B, latent_dim]`` -> images ``[B, 3, size, size]`` in about [-1, 1].

    Construct it with :meth:`from_checkpoint` (architecture read off the state dict); the constructor
    builds randomly initialised weights of the given architecture. ``channels`` overrides the reference's
    width table (``{resolution: channels}`` for every power of two from 4 to ``size``).

    ``truncation`` ψ pulls mapped latents towards the mean latent: ``w = w_avg + ψ (w - w_avg)``. In the
    ``z`` space it is applied inside the forward pass; in ``w``/``w+`` it is applied by
    :meth:`sample_latents` (the latents an editor moves are the truncated ones). ``w_avg`` is the mean of
    ``mean_latent_samples`` mapped latents of fixed seeds (deterministic), or the checkpoint's
    ``latent_avg`` with ``mean_latent="checkpoint"``.

    ``noise="const"`` uses the checkpoint's per-layer noise images (``noises.noise_K``; deterministic
    images), ``"random"`` draws fresh noise on every call (the reference's ``randomize_noise=True``).
    """

    #: how agelatent-edit crops a photo's face for this generator by default (agelatent.photos.faces): the
    #: paper-grade checkpoints are FFHQ's; a generator trained on other crops takes ``alignment=template``
    photo_alignment = "ffhq"

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        *,
        channels: dict[int, int] | None = None,
        lr_mlp: float = 0.01,
        blur_taps: Sequence[float] = (1, 3, 3, 1),
        latent_space: LatentSpace = "w",
        truncation: float = 1.0,
        noise: NoiseMode = "const",
        mean_latent_samples: int = 4096,
    ) -> None:
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        if latent_space not in ("z", "w", "w+"):
            raise ValueError(f"latent_space must be one of 'z', 'w', 'w+', got {latent_space!r}")
        if noise not in ("const", "random"):
            raise ValueError(f"noise must be 'const' or 'random', got {noise!r}")
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must be in [0, 1] (1: none), got {truncation}")
        if mean_latent_samples < 1:
            raise ValueError(f"mean_latent_samples must be positive, got {mean_latent_samples}")
        log_size = int(math.log2(size))
        resolutions = [2**i for i in range(2, log_size + 1)]
        channels = dict(channels) if channels is not None else standard_channels(size, channel_multiplier)
        if sorted(channels) != resolutions:
            raise ValueError(
                f"channels must give a width for each resolution {resolutions}, got {sorted(channels)}"
            )

        self.size = self.resolution = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channels = channels
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1  # synthesis convolutions, each with its own noise image
        self.n_latent = log_size * 2 - 2  # w inputs: 2 per resolution (+1 for the first ToRGB), shared ones
        self.latent_space = latent_space
        self.truncation = float(truncation)
        self.noise_mode = noise
        self.mean_latent_samples = mean_latent_samples
        self.latent_dim = style_dim * (self.n_latent if latent_space == "w+" else 1)

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)),
        )
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], style_dim, upsample=False, blur_taps=blur_taps)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False, blur_taps=blur_taps)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for k in range(self.num_layers):
            res = 2 ** ((k + 5) // 2)  # noise_0 is 4x4, then two per resolution
            self.noises.register_buffer(f"noise_{k}", torch.randn(1, 1, res, res))
        for res in resolutions[1:]:
            c_in, c_out = channels[res // 2], channels[res]
            self.convs.append(StyledConv(c_in, c_out, style_dim, upsample=True, blur_taps=blur_taps))
            self.convs.append(StyledConv(c_out, c_out, style_dim, upsample=False, blur_taps=blur_taps))
            self.to_rgbs.append(ToRGB(c_out, style_dim, upsample=True, blur_taps=blur_taps))
        # the truncation centre: not part of the checkpoint format, so not persistent
        self.register_buffer("w_avg", torch.zeros(style_dim), persistent=False)
        self._w_avg_ready = False

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None,
        latent_space: LatentSpace = "w",
        truncation: float = 1.0,
        noise: NoiseMode = "const",
        *,
        size: int | None = None,
        style_dim: int | None = None,
        n_mlp: int | None = None,
        channel_multiplier: int | None = None,
        lr_mlp: float = 0.01,
        mean_latent: Literal["estimate", "checkpoint"] = "estimate",
        mean_latent_samples: int = 4096,
    ) -> StyleGAN2Generator:
        """Load ``torch.load(path)["g_ema"]`` strictly, frozen (eval, no parameter gradients).

        The architecture is inferred from the state dict; ``size``, ``style_dim``, ``n_mlp`` and
        ``channel_multiplier`` may be given to assert what the file must contain. ``lr_mlp`` (the mapping
        network's learning-rate multiplier, 0.01 in the reference) is not recorded in the format.
        """
        if mean_latent not in ("estimate", "checkpoint"):
            raise ValueError(f"mean_latent must be 'estimate' or 'checkpoint', got {mean_latent!r}")
        checkpoint = _load_checkpoint(path)
        state = checkpoint["g_ema"]
        arch = infer_architecture(state)
        expected = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp}
        wrong = [f"{k}={v} (file: {arch[k]})" for k, v in expected.items() if v is not None and v != arch[k]]
        if (
            channel_multiplier is not None
            and standard_channels(arch["size"], channel_multiplier) != arch["channels"]
        ):
            wrong.append(f"channel_multiplier={channel_multiplier} (file channels: {arch['channels']})")
        if wrong:
            raise ValueError(
                f"{path}: the checkpoint does not match the requested architecture: {', '.join(wrong)}"
            )
        model = cls(
            arch["size"],
            arch["style_dim"],
            arch["n_mlp"],
            channels=arch["channels"],
            lr_mlp=lr_mlp,
            latent_space=latent_space,
            truncation=truncation,
            noise=noise,
            mean_latent_samples=mean_latent_samples,
        )
        model.load_checkpoint_state(state, source=str(path))
        if mean_latent == "checkpoint":
            avg = checkpoint.get("latent_avg")
            if not isinstance(avg, torch.Tensor) or avg.numel() != model.style_dim:
                found = "absent" if avg is None else f"shape {tuple(getattr(avg, 'shape', ()))}"
                raise ValueError(
                    f"{path}: mean_latent='checkpoint' needs a 'latent_avg' tensor of {model.style_dim} values "
                    f"(written by rosinality's convert_weight.py), but it is {found}; use mean_latent='estimate'"
                )
            model.w_avg.copy_(avg.reshape(-1).float())
            model._w_avg_ready = True
        model.eval().requires_grad_(False)
        if model.truncation != 1.0:
            model.mean_w()  # settle the truncation centre at load time, on the loading device
        return model

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Strict load: every key consumed, none missing, every shape equal, else ValueError naming them."""
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own), key=_natural)
        missing = sorted(set(own) - set(state), key=_natural)
        if unexpected or missing:
            raise ValueError(
                f"{source}: the g_ema state dict does not match a {self.size}x{self.size} StyleGAN2 generator "
                f"(style_dim {self.style_dim}, n_mlp {self.n_mlp}): unexpected keys {_names(unexpected)}; "
                f"missing keys {_names(missing)}"
            )
        shapes = [
            f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
            for k, v in own.items()
            if tuple(state[k].shape) != tuple(v.shape)
        ]
        if shapes:
            raise ValueError(f"{source}: tensors with the wrong shape: {_names(shapes)}")
        self.load_state_dict(state, strict=True)
        self._w_avg_ready = False

    # ------------------------------------------------------------------ latents

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z ``[B, style_dim]`` -> w ``[B, style_dim]`` (PixelNorm + the MLP), untruncated."""
        return self.style(z)

    def _mean_latent_z(self) -> torch.Tensor:
        """The fixed-seed z samples ``w_avg`` (and the typical set's radius) are measured on."""
        return torch.randn(
            self.mean_latent_samples, self.style_dim, generator=torch.Generator().manual_seed(123456789)
        )

    def mean_w(self) -> torch.Tensor:
        """The truncation centre ``w_avg`` ``[style_dim]``: computed once (fixed seeds), then cached."""
        if not self._w_avg_ready:
            with torch.no_grad():
                total = torch.zeros(self.style_dim, dtype=torch.float64, device=self.w_avg.device)
                for chunk in self._mean_latent_z().split(1024):
                    total += self.mapping(chunk.to(self.w_avg.device)).double().sum(dim=0)
            self.w_avg.copy_((total / self.mean_latent_samples).float())
            self._w_avg_ready = True
        return self.w_avg

    @torch.no_grad()
    def typical_set(self) -> TypicalSet:
        """Where :meth:`sample_latents` puts latents in the configured space (the inversion's typicality
        term): in ``z`` the standard normal's; in ``w`` centre ``w_avg`` and radius the mean distance of
        the ``mean_latent_samples`` fixed-seed mapped, truncated latents from it; ``w+`` repeats that
        per layer (block ``style_dim``)."""
        here = self.w_avg.device
        if self.latent_space == "z":
            return TypicalSet.standard_normal(self.latent_dim, here)
        avg = self.mean_w()
        total = 0.0
        for chunk in self._mean_latent_z().split(1024):
            total += float((self.truncate(self.mapping(chunk.to(here))) - avg).norm(dim=1).double().sum())
        repeat = self.n_latent if self.latent_space == "w+" else 1
        return TypicalSet(avg.repeat(repeat).clone(), self.style_dim, total / self.mean_latent_samples)

    def first_layer_map(self) -> torch.Tensor:
        """The style affines of every modulated layer, stacked: ``[sum of input channels, latent_dim]``, the
        linear map from w to every layer's style (SeFa's choice for StyleGAN); in ``w+`` each layer's affine
        reads its own block of the latent (the blocks :meth:`synthesis` hands it). In ``z`` the mapping network
        is not linear: refused."""
        if self.latent_space == "z":
            raise NotImplementedError(
                "StyleGAN2 in z: the mapping network is not linear; use latent_space=w or w+"
            )
        reads = [
            (self.conv1, 0),
            (self.to_rgb1, 1),
        ]  # (layer, the w+ block it reads), as synthesis() runs them
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            reads += [(self.convs[2 * level], i), (self.convs[2 * level + 1], i + 1), (to_rgb, i + 2)]
        rows = []
        for layer, k in reads:
            affine = layer.conv.modulation
            weight = (affine.weight * affine.scale).detach()
            if self.latent_space == "w":
                rows.append(weight)
                continue
            block = weight.new_zeros(weight.shape[0], self.latent_dim)
            block[:, k * self.style_dim : (k + 1) * self.style_dim] = weight
            rows.append(block)
        return torch.cat(rows)

    def truncate(self, w: torch.Tensor) -> torch.Tensor:
        """``w_avg + ψ (w - w_avg)`` (identity when ψ = 1)."""
        if self.truncation == 1.0:
            return w
        avg = self.mean_w()
        return avg + self.truncation * (w - avg)

    @torch.no_grad()
    def sample_latents(
        self, seeds: Iterable[int] | torch.Tensor, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """One latent per seed in the configured space, independent of batch composition.

        z comes from one CPU generator per seed (as for every generator in this project); ``w`` and
        ``w+`` latents are its mapped, truncated image (``w+``: the same w in every row, flattened).
        """
        seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
        z = _standard_normal(seeds, self.style_dim, "cpu")
        if self.latent_space == "z":
            return z.to(device)
        here = self.w_avg.device
        w = self.truncate(self.mapping(z.to(here))) if len(seeds) else z.to(here)
        if self.latent_space == "w+":
            w = w.repeat(1, self.n_latent)
        return w.to(device)

    def _per_layer_w(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the configured space -> ``[B, n_latent, style_dim]``."""
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(
                f"StyleGAN2 {self.latent_space!r} latents must have shape [B, {self.latent_dim}], "
                f"got {tuple(latents.shape)}"
            )
        if self.latent_space == "w+":
            return latents.reshape(latents.shape[0], self.n_latent, self.style_dim)
        w = self.truncate(self.mapping(latents)) if self.latent_space == "z" else latents
        return w[:, None, :].expand(-1, self.n_latent, -1)

    # ------------------------------------------------------------------ synthesis

    def synthesis(self, ws: torch.Tensor, noise: NoiseMode | None = None) -> torch.Tensor:
        """Per-layer w ``[B, n_latent, style_dim]`` -> images ``[B, 3, size, size]``."""
        mode = noise or self.noise_mode
        noises = [
            getattr(self.noises, f"noise_{k}") if mode == "const" else None for k in range(self.num_layers)
        ]
        x = self.input(ws.shape[0])
        x = self.conv1(x, ws[:, 0], noises[0])
        skip = self.to_rgb1(x, ws[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # the up-conv reads w_i, the second conv w_{i+1}, the ToRGB w_{i+2}
            x = self.convs[2 * level](x, ws[:, i], noises[i])
            x = self.convs[2 * level + 1](x, ws[:, i + 1], noises[i + 1])
            skip = to_rgb(x, ws[:, i + 2], skip)
        return skip

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, latent_dim]`` in the configured space -> images ``[B, 3, size, size]`` (float32)."""
        return self.synthesis(self._per_layer_w(latents.float()))

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, style_dim={self.style_dim}, n_mlp={self.n_mlp}, latent_space={self.latent_space!r}, "
            f"truncation={self.truncation}, noise={self.noise_mode!r}"
        )


# ----------------------------------------------------------------------------------------------------------
# Checkpoint reading


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _names(keys: list[str], limit: int = 12) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def _load_checkpoint(path: str | Path | None) -> dict:
    """``torch.load(weights_only=True)`` with clear errors for a missing path, file or ``g_ema`` entry."""
    if path is None or str(path).strip() == "":
        raise ModelFileError(f"generator.path is not set. {_OBTAIN}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelFileError(f"StyleGAN2 checkpoint {file} (generator.path) does not exist. {_OBTAIN}")
    if file.suffix == ".pkl":
        from agelatent.generators.nvidia_pkl import read_nvidia_pkl

        return read_nvidia_pkl(file)
    # rosinality's training checkpoints also store their argparse options (``args``): a plain attribute
    # bag, safe to allow; anything else that is not tensors/containers is refused by weights_only.
    checkpoint = load_weights_only(
        file, "StyleGAN2 checkpoint (generator.path)", _OBTAIN, allow=(argparse.Namespace,)
    )
    if not isinstance(checkpoint, dict) or "g_ema" not in checkpoint:
        if isinstance(checkpoint, dict):
            keys = sorted(map(str, checkpoint), key=_natural)
            hint = (
                " (this looks like a bare generator state dict: save it as {'g_ema': state_dict})"
                if any(k.startswith("style.") or k == "input.input" for k in keys)
                else ""
            )
            found = f"a dict with keys {_names(keys)}{hint}"
        else:
            found = f"a {type(checkpoint).__name__}"
        raise ValueError(
            f"{file}: expected a dict with key 'g_ema' (rosinality/stylegan2-pytorch format), found {found}"
        )
    state = checkpoint["g_ema"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{file}: checkpoint['g_ema'] must be a state dict of tensors, got {type(state).__name__}"
        )
    return checkpoint


def infer_architecture(state: dict[str, torch.Tensor]) -> dict:
    """Size, style_dim, n_mlp, per-resolution channels (and the channel multiplier if standard) from keys.

    Only the shapes are read; whether every key is present is checked by the strict load that follows.
    """

    def shape(*keys: str) -> torch.Size:
        for key in keys:
            if key in state:
                return state[key].shape
        raise ValueError(f"the g_ema state dict lacks {' / '.join(keys)}, needed to infer the architecture")

    def indices(prefix: str) -> set[int]:
        pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
        return {int(m.group(1)) for k in state if (m := pattern.match(k))}

    mlp = indices("style.")
    n_mlp = max(mlp) if mlp else 0  # style.0 is the PixelNorm (no parameters)
    style_dim = shape("conv1.conv.modulation.weight", "to_rgb1.conv.modulation.weight", "style.1.weight")[1]
    n_levels = max([len(indices("to_rgbs."))] + [i // 2 + 1 for i in indices("convs.")])
    size = 4 * 2**n_levels
    channels = {4: shape("input.input", "conv1.conv.weight", "to_rgb1.conv.weight")[1]}
    for level in range(n_levels):
        width = _out_channels(state, level)
        if width is None:
            raise ValueError(f"the g_ema state dict has no tensors for resolution {8 * 2**level}")
        channels[8 * 2**level] = width
    multiplier = next((m for m in (1, 2, 4, 8) if standard_channels(size, m) == channels), None)
    return {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channels": channels,
        "channel_multiplier": multiplier,
    }


def _out_channels(state: dict[str, torch.Tensor], level: int) -> int | None:
    """Output width of level ``level`` (resolution 8 * 2**level), from whichever of its tensors exist."""
    for key, dim in (
        (f"convs.{2 * level}.conv.weight", 1),
        (f"convs.{2 * level + 1}.conv.weight", 1),
        (f"convs.{2 * level}.activate.bias", 0),
        (f"to_rgbs.{level}.conv.weight", 2),
    ):
        if key in state:
            return state[key].shape[dim]
    return None
