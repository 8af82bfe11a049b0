"""Annotated image grids (PNG) for sampling, training and evaluation reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    label_w = (
        0 if row_titles is None else 8 + 6 * max(len(line) for t in row_titles for line in t.split("\n"))
    )
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


def _edit_row(result, face: int, targets: Sequence[float]) -> tuple[torch.Tensor, list[str]]:
    """Face ``face``'s start image and its final image per target, with captions (age -- and the clean
    reading beside it when the world has a robust one --, similarity, outcome)."""
    from agelatent.env.outcome import Outcome

    marks = {Outcome.SUCCESS: "ok", Outcome.IDENTITY_LOST: "id lost", Outcome.TIMEOUT: "timeout"}
    first, n_t = face * len(targets), len(targets)

    def age(step: int, i: int) -> str:
        text = f"{result.ages[step, i]:.0f}y"
        return text if result.clean_ages is None else f"{text} ({result.clean_ages[step, i]:.0f} clean)"

    sep = " " if result.clean_ages is None else "\n"  # two readings need a line of their own
    images = [result.start_images[first]] + [result.final_images[first + j] for j in range(n_t)]
    captions = [f"start {age(0, first)}"]
    for i in range(first, first + n_t):
        mark = marks.get(Outcome(int(result.outcome[i])), "")
        captions.append(f"{age(-1, i)}{sep}sim {result.final_similarity[i]:.2f}\n{mark}")
    return torch.stack(images), captions


def edit_grid(result, targets: Sequence[float], rows: int) -> Image.Image:
    """An :class:`~agelatent.editors.EditResult` over faces x ``targets`` (face-major, as
    :func:`agelatent.evaluation.held_out.held_out_edits` orders them) as a grid: rows are the first ``rows``
    faces; columns the start face, then the final face for each target (caption: age, similarity, outcome)."""
    cells = [_edit_row(result, f, targets) for f in range(rows)]
    titles = ["start"] + [f"target {t:g}" for t in targets]
    return image_grid(torch.stack([im for im, _ in cells]), [c for _, c in cells], titles)


def editors_sheet(results: Mapping[str, object], targets: Sequence[float], faces: int) -> Image.Image:
    """Every editor on the same faces: for each of the first ``faces`` faces, one row per editor of
    ``results`` (name -> :class:`~agelatent.editors.EditResult`, all on the same edits), columns as in
    :func:`edit_grid`: what a person sees each editor do to one face, side by side."""
    cells, titles = [], []
    for f in range(faces):
        for name, result in results.items():
            cells.append(_edit_row(result, f, targets))
            titles.append(f"face {f + 1}\n{name}")
    columns = ["start"] + [f"target {t:g}" for t in targets]
    return image_grid(torch.stack([im for im, _ in cells]), [c for _, c in cells], columns, row_titles=titles)
