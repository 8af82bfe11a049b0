"""Closed-form semantic directions of a generator (SeFa, Shen & Zhou 2021): the directions in latent space
along which the generator's first layer responds most.

With ``A`` the linear map from a latent to the first layer's response (:meth:`Generator.first_layer_map`: the
DCGAN's first transposed convolution with its BatchNorm scale folded in; StyleGAN2's style affines), moving
a latent by ``t·d`` moves that response by ``t·A d``. The unit directions maximising ``‖A d‖`` are the
eigenvectors of ``AᵀA``, i.e. the right singular vectors of ``A``, ranked by singular value: the first
changes the first layer most, the next most of what is left, and so on. They are computed once per
generator (no sampling, no training) and are the shared semantic basis of the ``semantic_walk`` editor.
"""

from __future__ import annotations

import torch

__all__ = ["semantic_directions"]


@torch.no_grad()
def semantic_directions(generator, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(directions [k, latent_dim], singular values [k])``: unit-norm rows, strongest first (all of them
    when ``k`` is None). Signs are fixed so each direction's largest component is positive."""
    a = generator.first_layer_map().double().cpu()
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    k = len(s) if k is None else k
    if not 1 <= k <= len(s):
        raise ValueError(f"semantic directions: k must be in 1..{len(s)}, got {k}")
    directions = vh[:k]
    flip = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    return (directions * flip).float(), s[:k].float()
