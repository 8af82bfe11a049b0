"""Plane geometry shared by every alignment: one similarity fit and one affine warp.

Conventions, everywhere in agelatent: a pixel's centre sits at integer coordinates (pixel ``i`` spans
``[i - 0.5, i + 0.5]``), x to the right, y down; an affine map is a ``[2, 3]`` matrix acting on ``(x, y, 1)``.

* :func:`fit_similarity` -- the least-squares similarity between two point sets (Umeyama's estimator, in its
  closed 2-D form), batched: it aligns the embedded world's chips to dlib's template, a photo's face to a
  generator's template, and the canonical face to insightface's ArcFace template;
* :func:`warp_affine` -- images resampled through an affine map, bilinear, batched and differentiable: the
  insightface chips, the FFHQ and template crops of photos, and an edited face pasted back into its photo.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fit_similarity", "similarity_matrix", "warp_affine"]


def fit_similarity(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``src [P, 2] -> dst [B, P, 2]`` as complex ``z -> a z + b`` (``a``, ``b``:
    ``[B]`` complex128). Umeyama's estimator (rotation, uniform scale, translation; no reflection); in 2-D its
    optimum over proper rotations has this closed form."""
    src, dst = torch.as_tensor(src, dtype=torch.float64), torch.as_tensor(dst, dtype=torch.float64)
    ms, md = src.mean(0), dst.mean(1)
    zs = torch.complex(src[:, 0] - ms[0], src[:, 1] - ms[1])  # [P]
    zd = torch.complex(dst[..., 0] - md[:, None, 0], dst[..., 1] - md[:, None, 1])  # [B, P]
    a = (zs.conj() * zd).sum(-1) / (zs.abs() ** 2).sum()
    b = torch.complex(md[:, 0], md[:, 1]) - a * torch.complex(ms[0], ms[1])
    return a, b


def similarity_matrix(src, dst) -> np.ndarray:
    """:func:`fit_similarity` of one pair of point sets ``[P, 2]`` (P >= 2) as a ``[2, 3]`` float64 matrix."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"similarity_matrix: expected two [P>=2, 2] arrays, got {src.shape} and {dst.shape}")
    a, b = fit_similarity(torch.from_numpy(src), torch.from_numpy(dst)[None])
    a, b = complex(a[0]), complex(b[0])
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def _to_normalised(width: int, height: int) -> np.ndarray:
    """Pixel coordinates -> ``grid_sample``'s [-1, 1] with ``align_corners=False`` (3x3): the image's outer
    edges, half a pixel beyond the outer centres, at -1 and 1. (This convention keeps float32 grids closer to
    the exact positions than ``align_corners=True``: 0.010 against 0.021 gray levels at 1024 px.)"""
    return np.array(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]]
    )


def warp_affine(
    images: torch.Tensor,
    out_to_source: np.ndarray,
    out_hw: tuple[int, int],
    *,
    padding: str = "zeros",
) -> torch.Tensor:
    """``images [B, C, H, W]`` resampled onto an ``out_hw`` grid: output pixel ``(x, y)`` takes the bilinear
    value at ``out_to_source @ (x, y, 1)`` in the source (``[2, 3]`` for the batch, or ``[B, 2, 3]``);
    outside the source, ``padding`` (``zeros`` or ``border``). Only the small map goes to the images'
    device; the sampling grid is built there."""
    h_out, w_out = out_hw
    height, width = images.shape[-2:]
    m = np.asarray(out_to_source, dtype=np.float64).reshape(-1, 2, 3)
    m = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (len(m), 1, 1))], 1)
    theta = _to_normalised(width, height) @ m @ np.linalg.inv(_to_normalised(w_out, h_out))
    theta_t = torch.as_tensor(theta[:, :2], dtype=images.dtype, device=images.device)
    theta_t = theta_t.expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta_t, [images.shape[0], images.shape[1], h_out, w_out], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)
