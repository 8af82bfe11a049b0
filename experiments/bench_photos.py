"""Benchmark: real photos through ``agelatent-edit`` -- how well the world reconstructs them, how the edits
go, and how long one photo takes.

    python experiments/bench_photos.py [--photos PATH ...] [--steps 100] [--restarts 4] [--limit N]
        [--threads 2] [--json PATH]

Photos (default): scikit-image's astronaut, insightface's sample images (``Tom_Hanks_54745.png``, and
``t1.jpg``, a group photo), and the first faces of scikit-image's LFW subset (25x25 pixels: upsampled 4x,
to see whether detection copes). Each photo goes through :func:`agelatent.cli.edit.run` with the default
edit config (``conf/edit.yaml``: targets, editor, inversion settings unless overridden here), timed from
photo to written outputs. Reported per face: the reconstruction's identity similarity to the photo's face
(``1 - d`` of dlib's descriptors; dlib's own rule calls two faces the same person above 0.4), the gap between
the estimated ages of photo and reconstruction, and per edit the final age error and the similarity to the
photo; per photo, the seconds it took. With ``--json``, each photo's outputs (contact sheet, CSV, latent) are
kept beside it in ``photos/<photo>/``; the first sheet is the README's example
(``experiments/measurements.py --readme``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agelatent.cli.edit import run as edit_run
from agelatent.config import compose_config
from agelatent.photos import PhotoError
from agelatent.photos.editing import face_stem


def default_photos(folder: Path, lfw_faces: int = 2) -> list[Path]:
    import insightface
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    samples = Path(insightface.__file__).parent / "data" / "images"
    paths = [folder / "astronaut.png", samples / "Tom_Hanks_54745.png", samples / "t1.jpg"]
    for i, face in enumerate(skimage.data.lfw_subset()[:lfw_faces]):
        big = Image.fromarray((face * 255).astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
        big.save(folder / f"lfw_{i}.png")
        paths.append(folder / f"lfw_{i}.png")
    return paths


def run(photos: list[Path], overrides: list[str], keep: Path | None = None) -> dict:
    """Every photo through agelatent-edit; ``keep``: a folder for each photo's outputs (else discarded)."""
    per_photo, rows, refused, sheets = [], [], [], []
    for photo in photos:
        cfg = compose_config("edit", ["device=cpu", f"photo={photo}", "paste_back=false", *overrides])
        with tempfile.TemporaryDirectory() as tmp:
            out = keep / photo.stem if keep else Path(tmp)
            start = time.perf_counter()
            try:
                found = edit_run(cfg, out)
            except (PhotoError, ValueError) as err:
                refused.append({"photo": photo.name, "why": str(err)})
                continue
            seconds = time.perf_counter() - start
        faces = len({r["face"] for r in found})
        per_photo.append({"photo": photo.name, "faces": faces, "edits": len(found), "seconds": seconds})
        rows += found
        if keep:
            sheets.append(str(out / f"{face_stem(photo, 0)}.png"))
    recon = {(r["photo"], r["face"]): r for r in rows}.values()
    return {
        "photos": per_photo,
        "refused": refused,
        "example_sheet": sheets[0] if sheets else None,  # the first photo's first face
        "faces": len(recon),
        "reconstruction_similarity_to_photo": [r["reconstruction_similarity_to_photo"] for r in recon],
        "reconstruction_age_gap": [abs(r["reconstruction_age"] - r["photo_age"]) for r in recon],
        "edit_age_error": [abs(r["final_age"] - r["target_age"]) for r in rows],
        "edit_similarity_to_photo": [r["similarity_to_photo"] for r in rows],
        "edit_success": [r["outcome"] == "success" for r in rows],
        "seconds_per_face": statistics.median(p["seconds"] / p["faces"] for p in per_photo)
        if per_photo
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=Path, nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=None, help="inversion steps (default: conf/edit.yaml)")
    parser.add_argument("--restarts", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"threads={args.threads}"]
    overrides += [f"inversion.steps={args.steps}"] if args.steps else []
    overrides += [f"inversion.restarts={args.restarts}"] if args.restarts else []
    with tempfile.TemporaryDirectory() as tmp:
        photos = (args.photos or default_photos(Path(tmp)))[: args.limit]
        result = run(photos, overrides, args.json.parent / "photos" if args.json else None)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    result["summary"] = {
        "reconstruction_similarity_to_photo": mean(result["reconstruction_similarity_to_photo"]),
        "reconstruction_age_gap": mean(result["reconstruction_age_gap"]),
        "edit_age_error": mean(result["edit_age_error"]),
        "edit_similarity_to_photo": mean(result["edit_similarity_to_photo"]),
        "edit_success_rate": mean(result["edit_success"]),
    }
    result["threads"] = args.threads
    for p in result["photos"]:
        print(f"{p['photo']}: {p['faces']} face(s), {p['edits']} edits in {p['seconds']:.1f} s")
    for r in result["refused"]:
        print(f"{r['photo']}: refused ({r['why'][:120]})")
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
