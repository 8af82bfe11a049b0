"""Face alignment: dlib five-point landmarks, then batched, differentiable dlib-style face chips in torch.

Three layers:

* :class:`FivePointLandmarker`: dlib's ``shape_predictor`` (five-point model) over a batch of RGB images.
  Generated faces are centred, so a constant face rectangle replaces detection
  (:data:`GENERATED_FACE_WORK_SIZE`, :data:`GENERATED_FACE_RECT`); real photos go through dlib's HOG frontal
  face detector first (:class:`agelatent.photos.faces.FaceDetector`). The predictor runs in dlib-bin (per
  image, a Python loop) or as the batched torch port of
  :mod:`agelatent.ports.shape_predictor` (the same landmarks; ``backend``, :data:`LANDMARK_BACKENDS`).
* :func:`face_chip_details`: the chip geometry of dlib's ``get_face_chip_details(shape, size, padding)``
  for a batch of five-point shapes -- the same ``rect`` and ``angle`` (to ~1e-12), computed in float64.
* :func:`extract_chips`: ``[B, C, H, W]`` float images -> ``[B, C, S, S]`` chips with ``grid_sample``,
  differentiable w.r.t. the images, batched, reproducing what dlib's ``extract_image_chip`` (and so
  ``dlib.get_face_chip``) does with that geometry; :func:`extract_chips_upsampled` gives the chips of an
  image's bicubic upsampling straight from the small image (each pyramid level a separable linear map).

How dlib extracts a chip (facts from dlib's ``interpolation.h``/``image_pyramid.h``/``drectangle.h``) and
how each is reproduced here:

1. The chip->image map. ``get_face_chip_details`` fits a least-squares similarity transform (Umeyama) from
   a padded five-point mean-face template (scaled to ``size``) to the landmarks; it keeps ``angle`` and
   ``scale`` and stores ``rect = centered_drect(T(size/2, size/2), size*scale, size*scale)``, where a
   drectangle of width ``w`` spans ``[c - (w-1)/2, c + (w-1)/2]`` (dlib rectangles are inclusive:
   width = right - left + 1). Extraction then maps chip pixel (0, 0) to the rect's top-left corner,
   (S-1, 0) to its top-right and (0, S-1) to its bottom-left, each rotated by ``angle`` about the rect
   centre. So the per-pixel step is ``(size*scale - 1)/(size - 1)``, not ``scale``: dlib's chips are a
   hair wider than the fitted similarity. :meth:`ChipDetails.chip_to_image` is that exact map.
   Pixel centres sit at integer coordinates throughout (as in dlib).
2. Downsampling. If the chip is much smaller than ``rect``, dlib first builds a ``pyramid_down<2>`` image
   pyramid over the chip's bounding box (rotated rect grown by 2, 6, 14, ... pixels, clipped to the image,
   rounded): each level is a separable [1 4 6 4 1]/16 Gaussian, valid-only (no border padding), keeping
   every second pixel, level pixel j <- parent pixel 2j+2, size (n-3)//2. It descends while the next
   level's rect (corners mapped with dlib's ``point_down(p) = p/2 - (1.25, 0.75)``, an x/y asymmetric
   offset) still has more pixels than the chip, then samples that level bilinearly. We rebuild exactly
   that pyramid in torch (strided sums; per level both pixel phases, selected per sample, so that each
   face's grid lines up with its own bounding box, which may start at an odd pixel) and sample each level
   at dlib's ``point_down`` coordinates. Measured on real photos: this matches dlib to within its
   truncation bias (item 4); a Gaussian or antialiased-resize pre-filter followed by bilinear sampling
   differs by 3-9 gray levels, and so does the same pyramid with the geometrically true coordinates
   (``point_down`` puts the samples half a parent pixel left in x and down in y per level), and plain
   bilinear without a pre-filter by 6-10 at 32x32 (see tests/test_align.py).
3. Bilinear sampling with dlib's border rule: a chip pixel whose 2x2 neighbourhood is not entirely inside
   the (level) image is black -- not a partial blend as ``grid_sample(padding_mode="zeros")`` would give.
   We sample with ``align_corners=True`` and multiply by that validity mask.
4. Integer arithmetic. dlib works on uint8 images: every pyramid level is ``floor(sum/256)`` and the
   chip is the bilinear value truncated to uint8, so dlib's chips are on average ~0.5 gray level darker
   per truncation. ``extract_chips(..., quantize=True)`` reproduces the truncations (floor, straight-through
   gradient) for images on the 0..255 scale, which matches dlib's chips bit for bit (in every case we
   measured: 7 photo variants and 88 generated faces, 3 chip sizes); the default
   (``quantize=False``) is plain linear resampling, valid for any value range.

Not reproduced: dlib's no-op fast path (``angle == 0`` and ``rect`` exactly the chip size: a plain copy),
which real landmarks never hit, and the shared bounding box that ``dlib.get_face_chips`` (several faces
in one call) uses for all its chips; we reproduce the one-face ``get_face_chip``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import torch
import torch.nn.functional as F

from agelatent.geometry import fit_similarity
from agelatent.ports.shape_predictor import TorchShapePredictor
from agelatent.store import model_path

__all__ = [
    "DEFAULT_PADDING",
    "LANDMARK_BACKENDS",
    "GENERATED_FACE_RECT",
    "GENERATED_FACE_WORK_SIZE",
    "MEAN_FACE_5",
    "ChipDetails",
    "FivePointLandmarker",
    "extract_chips",
    "extract_chips_upsampled",
    "face_chip_details",
    "rescale_landmarks",
    "resize_bicubic",
]

# dlib's five-point mean face (get_face_chip_details, 5-part branch), in units of the unpadded face box.
# Order = the five-point predictor's parts: 0 left eye outer corner, 1 left eye inner corner, 2 right eye
# outer corner, 3 right eye inner corner, 4 base of the nose (subject's left = image right).
MEAN_FACE_5 = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)
DEFAULT_PADDING = 0.25  # dlib.get_face_chip's default (the face-recognition ResNet's 150x150 chips)

# Generated (DCGAN, 64x64) faces: upsample bicubically to 256 and use this rectangle instead of detection.
# Calibrated on generated faces (landmarks: seeds 5000-5399; ages: seeds 9000-9399): dlib's HOG detector finds
# ~75% of them, its median box is (35, 74, 214, 254) -- the predictor was trained on boxes placed that low
# (brows to chin). Against landmarks from the detector's own box, this rect gives a mean landmark error of
# 1.9% of the inter-ocular distance (p90 4.6%) and 64x64-chip ages correlating 0.94 (MAE 1.7 years) with the
# detector-box ages; the earlier recipe's (40, 40, 216, 216) gives 5.0% (p90 13.5%) and 0.89 (MAE 2.6).
GENERATED_FACE_WORK_SIZE = 256
GENERATED_FACE_RECT = (40, 64, 216, 240)  # (left, top, right, bottom), inclusive, in work-size pixels

_PYR_KERNEL = (1.0, 4.0, 6.0, 4.0, 1.0)

#: Who runs the five-point predictor: dlib-bin (C++, one image at a time), the batched torch port of it
#: (:mod:`agelatent.ports.shape_predictor`, identical landmarks on the CPU), or ``auto``: dlib on the CPU
#: (faster there per face: ``make bench``), the port on any other device (no host round trip per image).
LANDMARK_BACKENDS = ("auto", "dlib", "torch")


# ----------------------------------------------------------------------------------------------------------
# Input checks


def _check_images(images: torch.Tensor, what: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{what}: expected shape [B, C, H, W], got {tuple(images.shape)}")
    if images.shape[2] < 2 or images.shape[3] < 2:
        raise ValueError(f"{what}: expected H, W >= 2 in [B, C, H, W], got {tuple(images.shape)}")


def _as_landmarks(landmarks) -> torch.Tensor:
    lm = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, torch.Tensor) else landmarks)
    if lm.ndim != 3 or lm.shape[1:] != (5, 2):
        raise ValueError(f"landmarks: expected shape [B, 5, 2] (x, y), got {tuple(lm.shape)}")
    lm = lm.detach().to("cpu", torch.float64)
    if not torch.isfinite(lm).all():
        bad = (~torch.isfinite(lm).reshape(len(lm), -1).all(1)).nonzero().flatten().tolist()
        raise ValueError(f"landmarks: non-finite values for batch items {bad[:10]}")
    return lm


# ----------------------------------------------------------------------------------------------------------
# Chip geometry


@dataclass(frozen=True)
class ChipDetails:
    """A batch of dlib ``chip_details`` (square chips): float64 CPU tensors, one row per face.

    ``rect``: ``[B, 4]`` (left, top, right, bottom) in image pixels, inclusive as dlib's drectangle
    (width = right - left + 1); ``angle``: ``[B]`` radians; ``size``: chip rows = cols.
    """

    rect: torch.Tensor
    angle: torch.Tensor
    size: int

    def __len__(self) -> int:
        return int(self.rect.shape[0])

    def chip_to_image(self) -> torch.Tensor:
        """``[B, 2, 3]`` affine map chip pixel (x, y, 1) -> image pixel (x, y), as dlib extracts at full
        resolution: a similarity (rotation ``angle``, step ``(right-left)/(size-1)``)."""
        return _corner_affine(self.rect, self.angle, self.size)


def _corner_affine(rect: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """dlib's chip->rect map: chip corners (0,0), (S-1,0), (0,S-1) -> the rect's rotated corners."""
    left, top, right, bottom = rect.unbind(-1)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    kx, ky = (right - left) / (size - 1), (bottom - top) / (size - 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([torch.stack([cos * kx, -sin * ky], -1), torch.stack([sin * kx, cos * ky], -1)], -2)
    half = (size - 1) / 2
    offset = torch.stack([cx, cy], -1) - (a @ torch.full((2, 1), half, dtype=a.dtype)).squeeze(-1)
    return torch.cat([a, offset[..., None]], -1)


def face_chip_details(landmarks, size: int, padding: float = DEFAULT_PADDING) -> ChipDetails:
    """dlib's ``get_face_chip_details(shape, size, padding)`` for a batch of five-point shapes.

    ``landmarks``: ``[B, 5, 2]`` (x, y) image pixels in the five-point predictor's part order (tensor or
    array). Matches ``dlib.get_face_chip_details`` to ~1e-13 pixel (``dlib.get_face_chip``'s binding rounds
    ``padding`` to float32 first, which moves its rect by ~1e-7 pixel; irrelevant for chips). Returns float64
    :class:`ChipDetails` on the CPU (tiny; :func:`extract_chips` moves what it needs to the images' device).
    """
    if int(size) != size or size < 2:
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    if not (padding >= 0 and math.isfinite(padding)):
        raise ValueError(f"padding: expected a finite value >= 0, got {padding!r}")
    size = int(size)
    lm = _as_landmarks(landmarks)
    pad = float(padding)
    template = (torch.tensor(MEAN_FACE_5, dtype=torch.float64) + pad) / (2 * pad + 1) * size  # [5, 2]

    a, _ = fit_similarity(template, lm)
    angle = torch.atan2(a.imag, a.real)
    scale = a.abs()
    # image position of the template's (size/2, size/2)
    c = torch.complex(
        torch.tensor(size / 2.0 - template[:, 0].mean().item(), dtype=torch.float64),
        torch.tensor(size / 2.0 - template[:, 1].mean().item(), dtype=torch.float64),
    )
    centre = a * c + torch.complex(lm[..., 0].mean(1), lm[..., 1].mean(1))
    half = (size * scale - 1) / 2  # centered_drect(p, w, h) spans p -/+ (w - 1)/2
    rect = torch.stack([centre.real - half, centre.imag - half, centre.real + half, centre.imag + half], -1)
    return ChipDetails(rect=rect, angle=angle, size=size)


# ----------------------------------------------------------------------------------------------------------
# dlib's extraction plan (per face, vectorised over the batch; float64 numpy, mirrors dlib's arithmetic)


@dataclass(frozen=True)
class _Plan:
    box: np.ndarray  # [B, 4] int64 integer bounding box (l, t, r, b) of the sub-image dlib works in
    level: np.ndarray  # [B] int64 number of pyramid_down<2> steps applied before sampling (0 = none)
    rect: np.ndarray  # [B, 4] the chip rect in that level's coordinates (relative to the box)
    dims: np.ndarray  # [B, 2] (rows, cols) of that level image (0 when dlib's level is empty)


def _rect_down(rect: np.ndarray) -> np.ndarray:
    # pyramid_down<2>::point_down(p) = p/2 - (1.25, 0.75), applied to both corners
    return rect / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])


def _area(rect: np.ndarray) -> np.ndarray:
    w = rect[:, 2] - rect[:, 0] + 1
    h = rect[:, 3] - rect[:, 1] + 1
    empty = (w <= 0) | (h <= 0)
    return np.where(empty, 0.0, w * h)


def _plan(details: ChipDetails, height: int, width: int) -> _Plan:
    rect = details.rect.numpy().astype(np.float64)
    angle = details.angle.numpy().astype(np.float64)
    n_pixels = float(details.size * details.size)
    n = len(rect)

    # depth of the pyramid and how much to grow the crop around the chip (2, 6, 14, ...)
    depth = np.zeros(n, np.int64)
    grow = np.full(n, 2.0)
    cur = _rect_down(rect)
    active = _area(cur) > n_pixels
    while active.any():
        cur = np.where(active[:, None], _rect_down(cur), cur)
        depth += active
        grow = np.where(active, grow * 2 + 2, grow)
        active = active & (_area(cur) > n_pixels)

    # bounding box of the rotated rect, grown, clipped to the image, rounded (drectangle -> rectangle)
    cx, cy = (rect[:, 0] + rect[:, 2]) / 2, (rect[:, 1] + rect[:, 3]) / 2
    cos, sin = np.cos(angle), np.sin(angle)
    xs, ys = [], []
    for px, py in ((0, 1), (2, 1), (0, 3), (2, 3)):  # tl, tr, bl, br
        dx, dy = rect[:, px] - cx, rect[:, py] - cy
        xs.append(cos * dx - sin * dy + cx)
        ys.append(sin * dx + cos * dy + cy)
    xs, ys = np.stack(xs, 1), np.stack(ys, 1)
    box = np.stack(
        [
            np.maximum(xs.min(1) - grow, 0.0),
            np.maximum(ys.min(1) - grow, 0.0),
            np.minimum(xs.max(1) + grow, width - 1.0),
            np.minimum(ys.max(1) + grow, height - 1.0),
        ],
        1,
    )
    box = np.floor(box + 0.5).astype(np.int64)
    empty_box = (box[:, 0] > box[:, 2]) | (box[:, 1] > box[:, 3])

    # the level to sample from, and the chip rect in that level's coordinates
    level = np.zeros(n, np.int64)
    lrect = rect - np.stack([box[:, 0], box[:, 1], box[:, 0], box[:, 1]], 1)
    active = _area(_rect_down(lrect)) > n_pixels
    while active.any():
        lrect = np.where(active[:, None], _rect_down(lrect), lrect)
        level += active
        active = active & (_area(_rect_down(lrect)) > n_pixels)

    # size of that level's image: the box, then (n - 3) // 2 per level; dlib empties a level <= 8 pixels
    rows = np.where(empty_box, 0, box[:, 3] - box[:, 1] + 1)
    cols = np.where(empty_box, 0, box[:, 2] - box[:, 0] + 1)
    for k in range(int(level.max(initial=0))):
        step = level > k
        small = (rows <= 8) | (cols <= 8)
        rows = np.where(step, np.where(small, 0, (rows - 3) // 2), rows)
        cols = np.where(step, np.where(small, 0, (cols - 3) // 2), cols)
    return _Plan(box=box, level=level, rect=lrect, dims=np.stack([rows, cols], 1))


# ----------------------------------------------------------------------------------------------------------
# Extraction


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _filter_down(x: torch.Tensor, dim: int, odd: torch.Tensor) -> torch.Tensor:
    """Unnormalised [1 4 6 4 1] along ``dim`` (-1 or -2), valid only, every second output: output pixel j
    <- input 2j + phase + 2, the phase (0 or 1) chosen per sample by ``odd`` ([B] bool). Filtered at full
    resolution (contiguous in-place accumulation: fastest on CPU), then both phases are strided views
    selected elementwise (no gather, no per-sample loop). Its gradient is the transposed filter written
    into one buffer (:class:`_FilterDown`): autograd through the five shifted views and two strided ones
    would allocate and zero a full-size gradient for each, a large share of an env step's backward passes
    in torch.profiler."""
    if x.requires_grad and torch.is_grad_enabled():
        return _FilterDown.apply(x, dim, odd)
    return _filter_down_values(x, dim, odd)


def _filter_down_values(x: torch.Tensor, dim: int, odd: torch.Tensor) -> torch.Tensor:
    n = x.shape[dim]
    full = x.narrow(dim, 0, n - 4).clone()
    for k in range(1, 5):
        full.add_(x.narrow(dim, k, n - 4), alpha=_PYR_KERNEL[k])
    count, count_odd = (n - 3) // 2, (n - 4) // 2
    even = full.narrow(dim, 0, 2 * count - 1)
    even = even[..., ::2] if dim == -1 else even[..., ::2, :]
    if not bool(odd.any()):
        return even
    # the odd phase may be one pixel shorter: zero-pad (dlib never samples there: outside its level image)
    shifted = full.narrow(dim, 1, max(2 * count_odd - 1, 0))
    shifted = shifted[..., ::2] if dim == -1 else shifted[..., ::2, :]
    shifted = F.pad(shifted, [0, count - count_odd] if dim == -1 else [0, 0, 0, count - count_odd])
    return torch.where(odd.to(x.device)[:, None, None, None], shifted, even)


class _FilterDown(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, odd: torch.Tensor) -> torch.Tensor:
        ctx.dim, ctx.n = dim, x.shape[dim]
        ctx.save_for_backward(odd.to(x.device))
        return _filter_down_values(x, dim, odd)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (odd,) = ctx.saved_tensors
        dim, n = ctx.dim, ctx.n
        count_odd = (n - 4) // 2
        shape = list(grad.shape)
        shape[dim] = n - 4
        g_full = grad.new_zeros(shape)  # the gradient w.r.t. the full-resolution filtered image
        rows = odd[:, None, None, None]
        even = torch.where(rows, 0.0, grad)
        strided = g_full[..., ::2] if dim == -1 else g_full[..., ::2, :]
        strided.copy_(even)  # even phase: filtered pixels 0, 2, ..., 2 count - 2
        if bool(odd.any()) and count_odd > 0:
            odd_part = torch.where(rows, grad, 0.0).narrow(dim, 0, count_odd)
            shifted = g_full.narrow(dim, 1, 2 * count_odd - 1)
            shifted = shifted[..., ::2] if dim == -1 else shifted[..., ::2, :]
            shifted.copy_(odd_part)  # odd phase: pixels 1, 3, ..., 2 count_odd - 1 (disjoint from even)
        shape[dim] = n
        g_x = grad.new_zeros(shape)
        for k in range(5):
            g_x.narrow(dim, k, n - 4).add_(g_full, alpha=_PYR_KERNEL[k])
        return g_x, None, None


def _pyramid_down(x: torch.Tensor, odd_x: torch.Tensor, odd_y: torch.Tensor, quantize: bool) -> torch.Tensor:
    """dlib's pyramid_down<2>: separable [1 4 6 4 1]/16 Gaussian, valid only, every second pixel (size
    (n-3)//2, pixel j <- parent 2j+2), on the parent grid shifted by one pixel where ``odd_*``."""
    y = _filter_down(_filter_down(x, -1, odd_x), -2, odd_y) / 256.0
    return _floor_ste(y) if quantize else y


def extract_chips(
    images: torch.Tensor,
    details: ChipDetails,
    *,
    pyramid: bool = True,
    quantize: bool = False,
) -> torch.Tensor:
    """Face chips ``[B, C, S, S]`` from ``images [B, C, H, W]`` (float, any value range), as dlib cuts them.

    ``details``: from :func:`face_chip_details`, one per image. Differentiable w.r.t. ``images``; batched
    (faces are grouped by pyramid level; no per-face Python loop). Chip pixels whose source lies outside the
    image are 0, like dlib's black background.

    ``pyramid=False`` skips dlib's image pyramid and samples the full-resolution image bilinearly (aliased
    when the chip is much smaller than the face; for comparison only). ``quantize=True`` reproduces dlib's
    uint8 arithmetic (input rounded and clamped to 0..255, pyramid levels and output floored; gradients
    pass straight through); only meaningful for images on the 0..255 scale.
    """
    _check_images(images)
    if not isinstance(details, ChipDetails):
        raise ValueError(
            f"details: expected ChipDetails (see face_chip_details), got {type(details).__name__}"
        )
    if len(details) != images.shape[0]:
        raise ValueError(
            f"details: expected one chip per image ({images.shape[0]} images of shape "
            f"{tuple(images.shape)}), got {len(details)}"
        )
    if not images.is_floating_point():
        images = images.float()
    bsz, channels, height, width = images.shape
    size = details.size
    device = images.device
    if bsz == 0:
        return images.new_zeros(0, channels, size, size)

    if pyramid:
        plan = _plan(details, height, width)
    else:
        whole = np.tile(np.array([[0, 0, width - 1, height - 1]], np.int64), (bsz, 1))
        plan = _Plan(
            box=whole,
            level=np.zeros(bsz, np.int64),
            rect=details.rect.numpy().astype(np.float64),
            dims=np.tile(np.array([[height, width]], np.int64), (bsz, 1)),
        )
    box_tl = torch.from_numpy(plan.box[:, :2])  # [B, 2] (x, y) int64
    if quantize:  # dlib sees uint8 pixels
        images = _round_ste(images.clamp(0, 255))
    levels: list[torch.Tensor] = [images]
    x = images
    for k in range(int(plan.level.max())):
        if min(x.shape[-2:]) < 6:
            break  # dlib's level would be empty too (it empties images <= 8 pixels; see plan.dims)
        bits = torch.bitwise_and(torch.bitwise_right_shift(box_tl, k), 1).bool()
        x = _pyramid_down(x, bits[:, 0], bits[:, 1], quantize)
        levels.append(x)

    def level_images(k: int, idx: torch.Tensor) -> torch.Tensor | None:
        if k >= len(levels):
            return None
        return levels[k] if len(idx) == bsz else levels[k].index_select(0, idx.to(device))

    return _sample_levels(level_images, plan, details, channels, images.dtype, device, quantize)


def extract_chips_upsampled(
    images: torch.Tensor, work_size: int, details: ChipDetails, *, work: torch.Tensor | None = None
) -> torch.Tensor:
    """``extract_chips(resize_bicubic(images, work_size), details)``, computed from the small ``images``.

    Every level of dlib's pyramid over the bicubic work image is a separable linear map of ``images``:
    per axis ``D_k ... D_1 M`` (``M`` the bicubic upsampling, ``D`` one ``pyramid_down`` step on the pixel
    phase the face's box needs), so a face's level image is two small matmuls instead of upsampling to
    ``work_size`` and filtering there. Same sampling and border rule as :func:`extract_chips`; values equal
    to float32 rounding (within 1e-3 of 255; ``tests/test_align.py``). ``work``: the work image when the
    caller has it already (used for level-0 chips). Not available with ``quantize`` (dlib's integer steps
    need the work image itself).
    """
    _check_images(images)
    if len(details) != images.shape[0]:
        raise ValueError(
            f"details: expected one chip per image ({images.shape[0]} images), got {len(details)}"
        )
    bsz, channels, h, w = images.shape
    device, dtype = images.device, images.dtype if images.is_floating_point() else torch.float32
    if bsz == 0:
        return images.new_zeros(0, channels, details.size, details.size, dtype=dtype)
    plan = _plan(details, work_size, work_size)
    box_tl = torch.from_numpy(plan.box[:, :2])  # [B, 2] (x, y)
    n_available = 1 + _pyramid_depth(work_size, int(plan.level.max()))

    def level_images(k: int, idx: torch.Tensor) -> torch.Tensor | None:
        if k >= n_available:
            return None
        if k == 0:  # the work image itself
            if work is None:
                src = images if len(idx) == bsz else images.index_select(0, idx.to(device))
                return resize_bicubic(src.to(dtype), work_size)
            return work if len(idx) == bsz else work.index_select(0, idx.to(device))
        phase = torch.remainder(box_tl[idx], 1 << k).to(device)  # which pixel phase each step keeps
        rows = _level_matrices(h, work_size, k, dtype, device)[phase[:, 1]]  # [n, h_k, h]
        cols = _level_matrices(w, work_size, k, dtype, device)[phase[:, 0]]  # [n, w_k, w]
        src = images if len(idx) == bsz else images.index_select(0, idx.to(device))
        return rows[:, None] @ src.to(dtype) @ cols[:, None].transpose(-1, -2)

    return _sample_levels(level_images, plan, details, channels, dtype, device, False)


def _pyramid_depth(size: int, wanted: int) -> int:
    """How many of ``wanted`` pyramid_down steps an image of ``size`` pixels gets (see extract_chips)."""
    depth = 0
    while depth < wanted and size >= 6:
        size, depth = (size - 3) // 2, depth + 1
    return depth


def _level_matrices(n_in: int, work_size: int, level: int, dtype, device) -> torch.Tensor:
    """``[2^level, n_level, n_in]``: per pixel phase code (box coordinate mod 2^level), the 1-D map from
    the small image to that pyramid level of its bicubic ``work_size`` upsampling."""
    key = (n_in, work_size, level, dtype, device)
    if key not in _LEVEL_MATRICES:
        base = _bicubic_matrix(n_in, work_size, torch.float64, torch.device("cpu"))  # [work, n_in]
        maps = [base]
        for step in range(level):
            n = maps[0].shape[0]
            count = (n - 3) // 2
            nxt = []
            kernel = torch.tensor(_PYR_KERNEL, dtype=torch.float64) / 16
            for code in range(1 << (step + 1)):
                phase = (code >> step) & 1
                down = torch.zeros(count, n, dtype=torch.float64)
                for j in range(count if phase == 0 else (n - 4) // 2):  # the odd phase may be 1 shorter
                    down[j, 2 * j + phase : 2 * j + phase + 5] = kernel
                nxt.append(down @ maps[code & ((1 << step) - 1)])
            maps = nxt
        _LEVEL_MATRICES[key] = torch.stack(maps).to(device, dtype)
    return _LEVEL_MATRICES[key]


_LEVEL_MATRICES: dict[tuple, torch.Tensor] = {}


def _sample_levels(
    level_images, plan: _Plan, details: ChipDetails, channels: int, dtype, device, quantize: bool
):
    """Sample each face's chip from its pyramid level, with dlib's border rule (see the module docstring).

    ``level_images(k, idx)``: the level-``k`` images of the faces ``idx`` (``None``: dlib's level is empty)."""
    bsz, size = len(details), details.size
    chip_to_level = _corner_affine(torch.from_numpy(plan.rect), details.angle, size)  # [B, 2, 3] float64
    box_tl = torch.from_numpy(plan.box[:, :2])
    # Our level k is built on phase bit k-1 of the box corner, so dlib's level-k pixel j (image
    # box + 2^k j + 2(2^k - 1)) is our level-k pixel j + (box >> k) (image 2^k j + box % 2^k + the same).
    origin = torch.bitwise_right_shift(box_tl, torch.from_numpy(plan.level)[:, None]).to(torch.float64)
    grid_dtype = torch.float32 if device.type == "mps" else torch.float64
    steps = torch.arange(size, dtype=grid_dtype, device=device)
    out = torch.zeros(bsz, channels, size, size, dtype=dtype, device=device)
    for k in sorted(set(plan.level.tolist())):  # one group per pyramid level (usually one)
        idx_np = np.flatnonzero(plan.level == k)
        idx = torch.from_numpy(idx_np)
        src = level_images(k, idx)
        if src is None:
            continue  # dlib's pyramid is empty there: all black
        n = len(idx)
        h_k, w_k = src.shape[-2:]
        # chip pixel (i, j) -> our level-k pixel, then normalised for grid_sample (align_corners=True:
        # -1/+1 = the first/last pixel centre)
        affine = chip_to_level[idx].clone()
        affine[:, :, 2] += origin[idx]
        a = affine.to(device, grid_dtype)[:, :, :, None, None]  # [n, 2, 3, 1, 1]
        pix = a[:, :, 0] * steps + a[:, :, 1] * steps[:, None] + a[:, :, 2]  # [n, 2 (x, y), S, S]
        # dlib's border rule: black unless the whole 2x2 neighbourhood lies inside its level image
        lo = origin[idx].to(device, grid_dtype)[:, :, None, None]  # [n, 2, 1, 1]
        hi = (
            lo
            + torch.from_numpy(plan.dims[idx_np][:, ::-1].copy()).to(device, grid_dtype)[:, :, None, None]
            - 1
        )
        valid = ((pix >= lo) & (pix < hi)).all(1)  # [n, S, S]
        scale = torch.tensor([2.0 / max(w_k - 1, 1), 2.0 / max(h_k - 1, 1)], dtype=grid_dtype, device=device)
        grid = (pix * scale[:, None, None] - 1).permute(0, 2, 3, 1)  # [n, S, S, 2]
        idx_d = idx.to(device)
        # quantize: sample in float64 like dlib, so the truncation sees the same value
        sample_dtype = grid_dtype if quantize else dtype
        sampled = F.grid_sample(
            src.to(sample_dtype),
            grid.to(sample_dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        sampled = sampled * valid.to(sample_dtype)[:, None]
        if quantize:  # + 1e-9: a value that is an integer on paper must not floor to the one below
            sampled = _floor_ste((sampled + 1e-9).clamp(0, 255))
        sampled = sampled.to(dtype)
        out = sampled if n == bsz else out.index_copy(0, idx_d, sampled)
    return out


# ----------------------------------------------------------------------------------------------------------
# Landmarks


def resize_bicubic(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, C, size, size]``, bicubic (``align_corners=False``: pixel centres at
    ``(i + 0.5) * scale - 0.5``), differentiable; the work image the generated-face recipe uses.

    Computed as the separable linear map it is, ``My · x · Mxᵀ``, with the per-axis weight matrices read
    off ``F.interpolate`` (:func:`_bicubic_matrix`): the same kernel and border rule, values equal to
    ``F.interpolate``'s within float32 rounding (1e-4 at 0..255), and both the forward pass and its gradient
    (``Myᵀ · g · Mx``) are two small matmuls: faster than ``F.interpolate`` on a CPU, and its backward
    replaces PyTorch's slow scatter kernel (``make bench`` measures the alignment's share)."""
    _check_images(images)
    if not images.is_floating_point():
        images = images.float()
    if images.shape[-2:] == (size, size):
        return images
    h, w = images.shape[-2:]
    my = _bicubic_matrix(h, size, images.dtype, images.device)  # [size, h]
    mx = _bicubic_matrix(w, size, images.dtype, images.device)  # [size, w]
    return my @ images @ mx.T


def _bicubic_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``M [n_out, n_in]``: 1-D bicubic resampling (``align_corners=False``) as a matrix, read off
    ``F.interpolate`` itself (resizing the unit vectors; the other axis stays at length 1, where the cubic
    kernel's weights are exactly 0, 1, 0, 0), so it is PyTorch's kernel and border rule by construction."""
    key = (n_in, n_out, dtype, device)
    if key not in _BICUBIC_MATRICES:
        eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1)
        basis = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)
        _BICUBIC_MATRICES[key] = basis[:, 0, :, 0].T.to(device, dtype).contiguous()
    return _BICUBIC_MATRICES[key]


_BICUBIC_MATRICES: dict[tuple, torch.Tensor] = {}


def rescale_landmarks(landmarks, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Map ``[..., 2]`` (x, y) pixel coordinates between two resolutions of the same image (pixel centres at
    integers, as :func:`resize_bicubic` resamples): ``x' = (x + 0.5) * W'/W - 0.5``."""
    lm = torch.as_tensor(landmarks, dtype=torch.float64)
    if lm.shape[-1:] != (2,):
        raise ValueError(f"landmarks: expected shape [..., 2] (x, y), got {tuple(lm.shape)}")
    scale = torch.tensor([to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]], dtype=torch.float64)
    return (lm + 0.5) * scale - 0.5


def load_shape_predictor(
    name: str, parts: int, path: str | Path | None = None
) -> tuple[Path, dlib.shape_predictor]:
    """dlib-bin's ``shape_predictor`` from the pinned store file ``name`` (or ``path``), checked to predict
    ``parts`` landmarks; returns (the file, the predictor)."""
    file = model_path(name, path)
    try:
        predictor = dlib.shape_predictor(str(file))
    except RuntimeError as exc:
        raise ValueError(f"{file}: not a dlib shape predictor ({exc})") from exc
    probe = predictor(np.zeros((16, 16, 3), np.uint8), dlib.rectangle(0, 0, 15, 15)).num_parts
    if probe != parts:
        raise ValueError(f"{file}: expected a {parts}-point shape predictor, it has {probe} parts")
    return file, predictor


def shape_points(predictor: dlib.shape_predictor, image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
    """``[parts, 2]`` (x, y) float64: ``predictor``'s landmarks of the face in ``box`` of ``image``."""
    return np.array([(p.x, p.y) for p in predictor(image, box).parts()], dtype=np.float64)


class FivePointLandmarker:
    """dlib's five-point shape predictor over a batch of RGB images.

    Images: a torch tensor ``[B, 3, H, W]`` (uint8, or float in ``value_range``) or a numpy array
    ``[B, H, W, 3]`` (uint8, or float in ``value_range``). If ``work_size`` is set and the images are not
    ``work_size`` x ``work_size``, they are first resized bicubically (:func:`resize_bicubic`) to it; the
    predictor runs on the work image (rounded to uint8), and the landmarks come back in pixel coordinates of
    the images *given* (pixel centres at integers). ``rect`` = (left, top, right, bottom), inclusive, in
    work-image pixels: the face box handed to the predictor by :meth:`__call__`.

    Defaults are the generated-face recipe (64x64 DCGAN faces -> 256, fixed box :data:`GENERATED_FACE_RECT`);
    real photos go through :class:`agelatent.photos.faces.FaceDetector` (dlib's detector, then this predictor
    with ``work_size=None``). The chips should then be cut from the same
    work image (``resize_bicubic(images, 256)``, landmarks mapped with ``(x + 0.5) * 4 - 0.5``, or simply
    pass the 256 image here), as the dlib recipe does.
    """

    def __init__(
        self,
        predictor_path: str | Path | None = None,
        *,
        work_size: int | None = GENERATED_FACE_WORK_SIZE,
        rect: Sequence[int] = GENERATED_FACE_RECT,
        value_range: tuple[float, float] = (0.0, 255.0),
        backend: str = "auto",
    ) -> None:
        if backend not in LANDMARK_BACKENDS:
            raise ValueError(f"perception.landmarks must be one of {LANDMARK_BACKENDS}, got {backend!r}")
        self.predictor_path, self.predictor = load_shape_predictor("shape_predictor_5", 5, predictor_path)
        if len(rect) != 4 or not (rect[0] < rect[2] and rect[1] < rect[3]):
            raise ValueError(
                f"rect: expected (left, top, right, bottom) with left < right, top < bottom, got {rect}"
            )
        if work_size is not None and (work_size < 8 or int(work_size) != work_size):
            raise ValueError(f"work_size: expected an integer >= 8 or None, got {work_size!r}")
        lo, hi = value_range
        if not hi > lo:
            raise ValueError(f"value_range: expected (low, high) with high > low, got {value_range}")
        self.work_size = None if work_size is None else int(work_size)
        self.rect = tuple(int(v) for v in rect)
        self.value_range = (float(lo), float(hi))
        self.backend = backend
        self._ports: dict[torch.device, TorchShapePredictor] = {}
        self.last_seconds_per_image = float("nan")

    def uses_torch(self, device: torch.device) -> bool:
        """Whether images on ``device`` go through the torch port (``auto``: everywhere but the CPU)."""
        return self.backend == "torch" or (self.backend == "auto" and device.type != "cpu")

    def _port(self, device: torch.device) -> TorchShapePredictor:
        if device not in self._ports:
            cpu = next(iter(self._ports.values()), None) or TorchShapePredictor.from_dat(self.predictor_path)
            self._ports[device] = cpu.to(device)
        return self._ports[device]

    # -- conversions ---------------------------------------------------------------------------------------

    def _to_work(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """-> (``[B, 3, h, w]`` work images on 0..255 (the port rounds where it reads), (H, W) given)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a torch tensor [B, 3, H, W] (RGB), got {tuple(images.shape)}")
        lo, hi = self.value_range
        t = images.detach()
        given = (int(t.shape[2]), int(t.shape[3]))
        if t.dtype != torch.uint8 and (lo, hi) != (0.0, 255.0):
            t = (t.float() - lo) * (255.0 / (hi - lo))
        if self.work_size is not None and given != (self.work_size, self.work_size):
            t = resize_bicubic(t.float(), self.work_size)
        return t, given

    def to_work_uint8(self, images) -> tuple[np.ndarray, tuple[int, int]]:
        """-> (``[B, h, w, 3]`` uint8 work images, (H, W) of the given images)."""
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images: expected a numpy array [B, H, W, 3] (RGB), got {images.shape}")
            images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        elif not isinstance(images, torch.Tensor):
            raise ValueError(
                f"images: expected a torch tensor [B, 3, H, W] or numpy [B, H, W, 3], got {type(images)}"
            )
        scaled, given = self._to_work(images)
        if scaled.dtype != torch.uint8:
            scaled = scaled.round().clamp_(0, 255).to(torch.uint8)
        return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy(), given

    def to_given(self, points: np.ndarray, given: tuple[int, int], work_hw: tuple[int, int]) -> torch.Tensor:
        if tuple(work_hw) == tuple(given):
            return torch.from_numpy(points)
        return rescale_landmarks(torch.from_numpy(points), work_hw, given)

    def predict(self, image: np.ndarray, box: dlib.rectangle) -> np.ndarray:
        """``[5, 2]`` landmarks of the face in ``box`` of one ``[H, W, 3]`` uint8 image (dlib-bin)."""
        return shape_points(self.predictor, image, box)

    # -- API -----------------------------------------------------------------------------------------------

    def __call__(self, images) -> torch.Tensor:
        """Landmarks ``[B, 5, 2]`` (x, y), float64 CPU, with the fixed ``rect`` as every face's box."""
        if isinstance(images, torch.Tensor) and self.uses_torch(images.device):
            work, given = self._to_work(images)
            start = time.perf_counter()
            points = self._port(work.device)(work, torch.tensor(self.rect)).cpu()
            self.last_seconds_per_image = (time.perf_counter() - start) / max(len(work), 1)
            return self.to_given(points.numpy(), given, tuple(work.shape[-2:]))
        work, given = self.to_work_uint8(images)
        box = dlib.rectangle(*self.rect)
        start = time.perf_counter()
        points = np.stack([self.predict(img, box) for img in work]) if len(work) else np.zeros((0, 5, 2))
        self.last_seconds_per_image = (time.perf_counter() - start) / max(len(work), 1)
        return self.to_given(points, given, work.shape[1:3])
