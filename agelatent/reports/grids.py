"""Annotated image grids (PNG) for sampling, training and evaluation reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images_m11: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] -> ``[N, H, W, 3]`` uint8."""
    pixels = ((images_m11.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def image_grid(
    images: torch.Tensor,
    captions: Sequence[Sequence[str]] | None = None,
    column_titles: Sequence[str] | None = None,
    scale: int = 2,
    row_titles: Sequence[str] | None = None,
) -> Image.Image:
    """Lay out ``images`` ``[R, C, 3, H, W]`` (values in [-1, 1]) as an R x C grid.

    Each cell is upscaled by ``scale`` (nearest, so pixels stay honest) and gets its caption (one or two
    short lines) underneath; optional titles go above the columns and left of the rows.
    """
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"image_grid expects [rows, cols, 3, H, W], got {tuple(images.shape)}")
    rows, cols, _, height, width = images.shape
    font = ImageFont.load_default()
    cell_w, cell_h = width * scale, height * scale
    caption_h = 0 if captions is None else 12 * max(c.count("\n") + 1 for row in captions for c in row) + 4
    title_h = 0 if column_titles is None else 16
    label_w = 0 if row_titles is None else 8 + 6 * max(len(t) for t in row_titles)
    pad = 4
    canvas = Image.new(
        "RGB",
        (label_w + cols * (cell_w + pad) + pad, title_h + rows * (cell_h + caption_h + pad) + pad),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    pixels = to_uint8(images.reshape(rows * cols, 3, height, width)).reshape(rows, cols, height, width, 3)
    for r, title in enumerate(row_titles or ()):
        draw.text(
            (4, title_h + pad + r * (cell_h + caption_h + pad) + cell_h // 2), title, fill="black", font=font
        )
    for c in range(cols):
        x = label_w + pad + c * (cell_w + pad)
        if column_titles is not None:
            draw.text((x + 2, 2), column_titles[c], fill="black", font=font)
        for r in range(rows):
            y = title_h + pad + r * (cell_h + caption_h + pad)
            tile = Image.fromarray(pixels[r, c]).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (x, y))
            if captions is not None:
                draw.multiline_text(
                    (x + 2, y + cell_h + 2), captions[r][c], fill="black", font=font, spacing=2
                )
    return canvas


def edit_grid(result, targets: Sequence[float], rows: int) -> Image.Image:
    """An :class:`~agelatent.editors.EditResult` over faces x ``targets`` (face-major, as
    :func:`agelatent.evaluation.held_out.held_out_edits` orders them) as a grid: rows are the first ``rows``
    faces; columns the start face, then the final face for each target (caption: age, similarity, outcome)."""
    from agelatent.env.outcome import Outcome

    marks = {Outcome.SUCCESS: "ok", Outcome.IDENTITY_LOST: "id lost", Outcome.TIMEOUT: "timeout"}
    n_t = len(targets)
    images, captions = [], []
    for f in range(rows):
        first = f * n_t
        row_images = [result.start_images[first]] + [result.final_images[first + j] for j in range(n_t)]
        row_caps = [f"start {result.ages[0, first]:.0f}y"]
        for j in range(n_t):
            i = first + j
            mark = marks.get(Outcome(int(result.outcome[i])), "")
            row_caps.append(f"{result.final_ages[i]:.0f}y sim {result.final_similarity[i]:.2f}\n{mark}")
        images.append(torch.stack(row_images))
        captions.append(row_caps)
    titles = ["start"] + [f"target {t:g}" for t in targets]
    return image_grid(torch.stack(images), captions, titles)
