"""An edited face back into its photo: inverse affine, feathered mask, colour matched.

The edited crop is mapped back with the inverse of the alignment's affine (bilinear, photo resolution).
The mask is an ellipse inscribed in the crop (the face; the crop's corners hold background the generator
invents), 1 inside, falling linearly to 0 over ``feather`` of its radius. Colours: the generator's
reconstruction and the photo differ in white balance and contrast, so each channel of the edited face is
shifted and scaled by the map that takes the *reconstruction*'s mean and standard deviation under the mask to
the photo's -- the edit's own colour changes (greyer hair) survive, the generator's colour cast does not.
Pixels outside the mask keep their exact values; the photo keeps its size.
"""

from __future__ import annotations

import numpy as np
import torch

from agelatent.geometry import warp_affine

__all__ = ["paste_back"]


def paste_back(
    photo: np.ndarray,
    edited: torch.Tensor,
    reconstruction: torch.Tensor,
    crop_to_photo: np.ndarray,
    feather: float = 0.15,
) -> np.ndarray:
    """``photo [H, W, 3]`` uint8 with ``edited [3, S, S]`` (0..255) pasted where the crop came from."""
    if not 0 < feather <= 1:
        raise ValueError(f"paste_back.feather must be in (0, 1], got {feather!r}")
    h, w = photo.shape[:2]
    size = edited.shape[-1]
    m = np.vstack([crop_to_photo, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)
    corners = m @ np.array([[0, size - 1, 0, size - 1], [0, 0, size - 1, size - 1], [1, 1, 1, 1]], float)
    x0, x1 = max(int(np.floor(corners[0].min())), 0), min(int(np.ceil(corners[0].max())), w - 1)
    y0, y1 = max(int(np.floor(corners[1].min())), 0), min(int(np.ceil(corners[1].max())), h - 1)
    out = photo.copy()
    if x0 > x1 or y0 > y1:
        return out  # the crop lies outside the photo
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]  # crop pixel coordinates of each photo pixel
    v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    half = (size - 1) / 2
    radius = np.sqrt(((u - half) / half) ** 2 + ((v - half) / half) ** 2)
    mask = np.clip((1 - radius) / feather, 0, 1)[..., None]  # [h', w', 1]
    region_to_crop = (inv @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]]))[:2]

    def warp(face: torch.Tensor) -> np.ndarray:
        sampled = warp_affine(face[None].float().cpu(), region_to_crop, (y1 - y0 + 1, x1 - x0 + 1))
        return sampled[0].permute(1, 2, 0).double().numpy()

    region = out[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    face, recon = warp(edited), warp(reconstruction)
    weight = mask[..., 0] > 0.5
    if weight.sum() >= 16:
        mu_p, sd_p = region[weight].mean(0), region[weight].std(0) + 1e-6
        mu_r, sd_r = recon[weight].mean(0), recon[weight].std(0) + 1e-6
        face = (face - mu_r) / sd_r * sd_p + mu_p
    blended = region * (1 - mask) + np.clip(face, 0, 255) * mask
    inside = mask[..., 0] > 0
    patch = out[y0 : y1 + 1, x0 : x1 + 1]
    patch[inside] = np.clip(np.round(blended[inside]), 0, 255).astype(np.uint8)
    return out
