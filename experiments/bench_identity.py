"""Descriptors per second: the PyTorch port of dlib's face ResNet vs dlib-bin, same chips, same run.

Usage: ``python experiments/bench_identity.py [--batch 32] [--rounds 7] [--ablation] [--json out.json]``

Rounds of each contender are interleaved so that load from other processes hits all of them alike; the
median round is reported. dlib-bin's ``compute_face_descriptor`` runs single-threaded; the port uses torch's
default thread count, and is also timed with one thread so the per-core ratio is visible.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import dlib
import numpy as np
import skimage.data
import torch

from agelatent.ports.dlib_resnet import CHIP_PADDING, CHIP_SIZE, DlibFaceResNet
from agelatent.store import model_path


def real_chips(n: int) -> np.ndarray:
    """n aligned 150x150 chips of the astronaut photo's face, each shifted a little so they differ."""
    img = skimage.data.astronaut()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path("shape_predictor_5")))
    rects, scores, _ = detector.run(img, 1, 0.0)
    chip = dlib.get_face_chip(img, predictor(img, rects[int(np.argmax(scores))]), CHIP_SIZE, CHIP_PADDING)
    return np.stack([np.roll(chip, (i % 5 - 2, i // 5 % 5 - 2), axis=(0, 1)) for i in range(n)])


def to_tensor(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chips).permute(0, 3, 1, 2).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ablation", action="store_true", help="also time affine folding / channels_last off")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    chips = real_chips(args.batch)
    rec = dlib.face_recognition_model_v1(str(model_path("dlib_face_resnet")))
    port = DlibFaceResNet.from_dat()
    threads = torch.get_num_threads()

    def port_fn(model: DlibFaceResNet, n_threads: int) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(n_threads)
            with torch.inference_mode():
                model(to_tensor(chips))  # includes the uint8 -> float tensor conversion, like dlib's

        return run

    def port_grad() -> None:
        torch.set_num_threads(threads)
        x = to_tensor(chips).requires_grad_(True)
        port(x).sum().backward()

    contenders: dict[str, Callable[[], None]] = {
        "dlib-bin per chip": lambda: [rec.compute_face_descriptor(c) for c in chips],
        "dlib-bin batch overload": lambda: rec.compute_face_descriptor(list(chips)),
        f"port ({threads} threads)": port_fn(port, threads),
        "port (1 thread)": port_fn(port, 1),
        f"port forward+backward to input ({threads} threads)": port_grad,
    }
    if args.ablation:
        for fold in (True, False):
            for cl in (True, False):
                if fold and cl:
                    continue
                m = DlibFaceResNet.from_dat(fold_affine=fold, channels_last=cl)
                contenders[f"port fold_affine={fold} channels_last={cl} ({threads} threads)"] = port_fn(
                    m, threads
                )

    # Parity spot check, so a fast but wrong port cannot report a ratio.
    ref = np.array(rec.compute_face_descriptor(list(chips[:4])))
    with torch.inference_mode():
        diff = np.linalg.norm(port(to_tensor(chips[:4])).numpy() - ref, axis=1).max()
    assert diff < 0.01, f"port disagrees with dlib-bin by {diff}"

    for fn in contenders.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)

    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    dlib_best = max(rate["dlib-bin per chip"], rate["dlib-bin batch overload"])
    print(
        f"batch {args.batch}, {args.rounds} interleaved rounds (median), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {threads} torch threads; parity {diff:.1e}"
    )
    for name, r in rate.items():
        print(f"  {name:<58} {r:8.1f} descriptors/s   x{r / dlib_best:6.1f} vs dlib-bin")
    ratio = rate[f"port ({threads} threads)"] / dlib_best
    ratio_1 = rate["port (1 thread)"] / dlib_best
    print(
        f"speed-up at batch {args.batch}: {ratio:.1f}x ({threads} threads), {ratio_1:.1f}x (1 thread) "
        "over dlib-bin's faster mode (single-threaded)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "rounds": args.rounds, "torch_threads": threads,
                       "descriptors_per_s": rate, "speedup": ratio, "speedup_1_thread": ratio_1,
                       "parity_max_l2": float(diff)}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
