"""The embedded world's generator: the PyTorch-tutorial DCGAN trained on DigiFace-1M (64x64 RGB faces).

Weights come from the ``gan-face-generate`` wheel (``netG_state_dict`` in ``weights.tar``). The layer
layout below reproduces that checkpoint's key names (``main.{0,1,3,4,...}``) so the state dict loads
strictly; the module is our own.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from agelatent.generators.base import Generator
from agelatent.store import load_weights_only, model_path


class DCGANGenerator(Generator):
    """z ``[B, nz]`` (standard normal) -> images ``[B, 3, 64, 64]`` in [-1, 1]."""

    #: how agelatent-edit crops a photo's face for this generator by default (agelatent.photos.faces):
    #: its DigiFace-style faces follow no published recipe, so their crop is measured from its samples
    photo_alignment = "template"

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.latent_dim = nz
        self.resolution = 64
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            first = i == 0  # 1x1 -> 4x4 with stride 1, no padding; then each layer doubles the size
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    @classmethod
    def pretrained(cls, path: str | Path | None = None) -> DCGANGenerator:
        """Load the DigiFace-1M weights (from the model store unless ``path`` overrides), frozen."""
        weights = model_path("dcgan_generator", path)
        checkpoint = load_weights_only(
            weights, "DCGAN generator", "use the DigiFace-1M file `agelatent-models fetch` installs"
        )
        if not isinstance(checkpoint, dict) or "netG_state_dict" not in checkpoint:
            keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise ValueError(f"{weights}: expected a dict with key 'netG_state_dict', found {keys}")
        state = checkpoint["netG_state_dict"]
        nz = state["main.0.weight"].shape[0]
        ngf = state["main.0.weight"].shape[1] // 8
        model = cls(nz=nz, ngf=ngf)
        model.load_state_dict(state, strict=True)  # strict: a different layout fails naming the keys
        return model.eval().requires_grad_(False)

    def first_layer_map(self) -> torch.Tensor:
        """The 1x1 -> 4x4 transposed convolution on z, with its eval-mode BatchNorm's per-channel scale folded
        in: ``[C * 16, nz]`` (the BatchNorm's shift is a constant; SeFa ignores it)."""
        conv, norm = self.main[0], self.main[1]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # [C]
        weight = conv.weight * scale[None, :, None, None]  # [nz, C, 4, 4]
        return weight.reshape(self.latent_dim, -1).T.detach()

    def forward(self, latents_bz: torch.Tensor) -> torch.Tensor:
        if latents_bz.ndim != 2 or latents_bz.shape[1] != self.latent_dim:
            raise ValueError(
                f"DCGAN latents must have shape [B, {self.latent_dim}], got {tuple(latents_bz.shape)}"
            )
        return self.main(latents_bz[:, :, None, None])
