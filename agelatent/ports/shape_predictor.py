"""dlib's shape predictor (Kazemi & Sullivan's ensemble of regression trees) as batched torch ops.

dlib runs its ``shape_predictor`` one image at a time in C++. This port reads the same ``.dat`` file
(:func:`~agelatent.ports.dlib_format.read_shape_predictor`) and evaluates the whole batch at once, on
the images' device, so the embedded world has no per-image Python loop and runs on a GPU. What dlib does
(facts from dlib's ``shape_predictor.h``), and how it is reproduced:

* The shape starts at the model's mean shape in the unit face box; each of ``C`` cascades then reads ``F``
  feature pixels and adds the leaf vectors of its ``T`` trees to the shape.
* A feature pixel is anchored to one part: its offset from that part in the mean shape is mapped by the
  similarity (least squares, Umeyama) from the mean shape to the current one, added to the part's current
  position (all float32, as dlib), mapped from the unit box to the face rectangle (``(0, 0)`` = its
  top-left corner, ``(1, 1)`` = its bottom-right corner, in float64), and rounded to the nearest pixel
  (``floor(v + 0.5)``). Its value is the pixel's intensity, ``(r + g + b) // 3`` of the uint8 image (dlib's
  RGB-to-grey conversion), or 0 outside the image.
* A split node sends a face left when ``value[idx1] - value[idx2] > threshold``; trees are complete, in
  breadth-first order, so a face's path is ``depth`` gathers over all ``B x T`` (face, tree) pairs.
* The final shape is mapped to the rectangle and rounded: dlib's landmarks are integer pixels.

Rounding: the similarity is solved in closed form in float64 (for the proper-rotation case dlib's SVD
returns; a reflection never fits a face) and cast to float32 as dlib does, where the two solutions round
alike. The leaf vectors are where rounding matters: dlib adds a cascade's 500 leaves to the float32 shape one
at a time, and a float64 sum instead moves a feature pixel across a pixel boundary in ~7% of faces (a
landmark then moves by a pixel). So on the CPU the port repeats dlib's sequential float32 sum (numpy's
``add.accumulate``) and its landmarks equal dlib's exactly
(``tests/test_align.py::test_torch_shape_predictor_matches_dlib``); on other devices it sums in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from agelatent.ports.dlib_format import ShapePredictorWeights, read_shape_predictor

__all__ = ["TorchShapePredictor"]


class TorchShapePredictor(nn.Module):
    """A dlib ``shape_predictor`` over a batch: ``(images [B, 3, H, W] on 0..255, rects [B, 4]) -> [B, P, 2]``.

    ``images``: RGB, uint8 or float (rounded to the nearest integer and clamped to 0..255 where read, as a
    uint8 conversion would); ``rects``: (left, top, right, bottom) integer face boxes, one per image or one
    ``[4]`` for all. Returns the landmarks as float64 integers (dlib's rounding), on the images' device.
    """

    def __init__(self, weights: ShapePredictorWeights) -> None:
        super().__init__()
        c, t, n_splits, _ = weights.split_pixels.shape
        self.num_parts = weights.num_parts
        self.num_trees, self.num_splits = t, n_splits
        self.depth = (n_splits + 1).bit_length() - 1
        initial = torch.from_numpy(weights.initial_shape.copy())  # [P, 2] float32
        self.register_buffer("initial", initial)
        # The similarity mean shape -> current shape, z -> a z (complex), is a = <src, shape> / |src|^2 with
        # src the centred mean shape: one [2P, 2] float64 matrix (columns: Re a, Im a).
        src = initial.double() - initial.double().mean(0)
        sx, sy = src.unbind(-1)
        solve = torch.stack([torch.stack([sx, sy], -1), torch.stack([-sy, sx], -1)], -1)  # [P, 2(xy), 2]
        self.register_buffer("solve", solve.reshape(2 * self.num_parts, 2) / (src**2).sum())
        self.register_buffer("anchor", torch.from_numpy(weights.anchor.copy()))  # [C, F]
        self.register_buffer("deltas", torch.from_numpy(weights.deltas.copy()))  # [C, F, 2]
        self.register_buffer("idx1", torch.from_numpy(weights.split_pixels[..., 0].reshape(c, t * n_splits)))
        self.register_buffer("idx2", torch.from_numpy(weights.split_pixels[..., 1].reshape(c, t * n_splits)))
        self.register_buffer("thresholds", torch.from_numpy(weights.thresholds.reshape(c, t * n_splits)))
        leaves = weights.leaves.reshape(c, t * (n_splits + 1), 2 * self.num_parts)
        self.register_buffer("leaves", torch.from_numpy(leaves.copy()))  # float32, as dlib adds them
        self.register_buffer("leaf_base", torch.arange(t) * (n_splits + 1))
        # A tree's leaf is a function of its split outcomes: index a table by the outcomes as a binary number.
        if n_splits > 20:
            raise ValueError(
                f"trees of depth {self.depth} are beyond this port (at most depth 4 is used by dlib's models)"
            )
        outcomes = (torch.arange(1 << n_splits)[:, None] >> torch.arange(n_splits)) & 1  # [2^S, S]
        node = torch.zeros(1 << n_splits, dtype=torch.long)
        for _ in range(self.depth):
            node = 2 * node + 2 - outcomes.gather(1, node[:, None])[:, 0]
        self.register_buffer("leaf_of_outcomes", node - n_splits)
        self.register_buffer("bit_values", (2.0 ** torch.arange(n_splits)).float())
        self.requires_grad_(False)

    @classmethod
    def from_dat(cls, path: str | Path) -> TorchShapePredictor:
        return cls(read_shape_predictor(path))

    @property
    def num_cascades(self) -> int:
        return int(self.anchor.shape[0])

    def _add_leaves(self, shape: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``shape [B, 2P] + steps [B, T, 2P]`` summed over trees. dlib adds the T leaf vectors one at a
        time in float32; its rounding moves a feature pixel across a pixel boundary in a few percent of faces,
        so on the CPU the same sequential float32 sum is done (numpy's ``add.accumulate`` is one); elsewhere
        the sum is float64, within ~1e-6 of the face box of dlib's."""
        if shape.device.type != "cpu":
            return (shape.double() + steps.double().sum(1)).float()
        seq = np.concatenate([shape.numpy()[:, None], steps.numpy()], 1)
        return torch.from_numpy(np.add.accumulate(seq, axis=1, dtype=np.float32)[:, -1].copy())

    def forward(self, images: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
        bsz, _, height, width = images.shape
        device = images.device
        rects = torch.as_tensor(rects, dtype=torch.float64, device=device).reshape(-1, 4).expand(bsz, 4)
        origin, extent = rects[:, None, :2], (rects[:, 2:] - rects[:, :2])[:, None]  # [B, 1, 2]
        if images.is_floating_point():  # as the uint8 image dlib would be given
            images = images.round().clamp(0, 255).to(torch.uint8)
        flat = images.reshape(-1)
        plane = height * width
        channel_base = (
            torch.arange(bsz, device=device)[:, None] * 3 + torch.arange(3, device=device)
        ) * plane
        shape = self.initial.reshape(1, -1).expand(bsz, -1).contiguous()  # [B, 2P] float32, unit face box
        for c in range(self.num_cascades):
            a = (shape.double() @ self.solve).float()  # [B, 2]: m = [[re, -im], [im, re]], float32 as dlib
            re, im = a[:, :1], a[:, 1:]
            dx, dy = self.deltas[c].unbind(-1)  # [F]
            at = shape.view(bsz, -1, 2).index_select(1, self.anchor[c])  # [B, F, 2]
            moved = torch.stack([(re * dx + -im * dy) + at[..., 0], (im * dx + re * dy) + at[..., 1]], -1)
            pix = torch.floor(origin + moved.double() * extent + 0.5)  # [B, F, 2] image pixels
            x, y = pix.unbind(-1)
            inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
            index = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).long()
            at_pixels = (channel_base[..., None] + index[:, None]).flatten()
            rgb = flat.index_select(0, at_pixels).view(bsz, 3, -1).to(torch.int32)  # [B, 3, F]
            grey = torch.div(rgb.sum(1), 3, rounding_mode="floor")  # dlib's grey level: (r + g + b) // 3
            values = torch.where(inside, grey, 0).float()  # [B, F]
            # every split of every tree at once; the outcomes of a tree's splits, read as a binary number,
            # index the table of the leaf they lead to
            left = (
                values.index_select(1, self.idx1[c]) - values.index_select(1, self.idx2[c])
                > self.thresholds[c]
            )
            code = left.view(bsz * self.num_trees, self.num_splits).float() @ self.bit_values
            leaf = (
                self.leaf_of_outcomes.index_select(0, code.long()).view(bsz, self.num_trees) + self.leaf_base
            )
            steps = self.leaves[c].index_select(0, leaf.flatten()).view(bsz, self.num_trees, -1)
            shape = self._add_leaves(shape, steps)
        return torch.floor(origin + shape.view(bsz, -1, 2).double() * extent + 0.5)
