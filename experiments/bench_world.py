"""Benchmark: ``world.score`` throughput by batch size, and where the time goes (embedded world, CPU).

    python experiments/bench_world.py [--batches 1 8 32 128 512] [--seconds 3] [--threads 2] [--json PATH]

Reports faces/s for the full call and for each stage at each batch (generator, 256 upsample, landmarks,
chips, age, gender, identity), so the ratio "full call / sum of stages" shows the overhead of the
composition itself, and "full call / networks' forward" (generator + age + gender + identity on ready
inputs: the floor no alignment code can beat) what alignment and composition add; the process's peak RSS
after each batch; the landmark stage with each backend (dlib-bin, the torch port). Then one batched env step of the default MDP (``conf/train.yaml``: ``env.num_envs``
episodes, the local-linear action with its kept quantities) against the bare ``world.score`` of as many
faces, with and without the backward passes the step needs (one per row of J: age, then each kept
quantity), so the env's own overhead and the cost of the directions are reported apart. Timings are
medians of repeated calls within one process; compare ratios, not absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from agelatent.config import compose_config
from agelatent.env.latent_age import LatentAgeEnv
from agelatent.perception.align import DEFAULT_PADDING
from agelatent.perception.onnx_models import CHIP_PADDING
from agelatent.world import build_world

#: The frozen networks of a score call; the rest (upsampling, landmarks, chips) is alignment. Their bare
#: forward passes on ready inputs are the floor a score call is compared with.
NETWORK_STAGES = ("generator", "age", "gender", "identity")


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far (MB): batches run in increasing order, so after each
    batch it is that batch's peak (or an earlier, larger one's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _landmark_backends(world, z, seconds: float) -> dict[str, float]:
    """ms per chunk for each landmark backend (dlib-bin and the torch port give the same landmarks)."""
    p = world.perception
    with torch.no_grad():
        work = p.work_images(world.generate(z[: world.chunk_size or len(z)]))
    before = p.landmarker.backend
    times = {}
    try:
        for backend in ("dlib", "torch"):
            p.landmarker.backend = backend
            times[backend] = 1e3 * _median_seconds(lambda: p.landmarks(work), seconds)
    finally:
        p.landmarker.backend = before
    return times


def _median_seconds(fn, budget: float) -> float:
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _stage_times(world, z, seconds: float) -> tuple[float, dict[str, float], int]:
    """(seconds per full call, seconds per stage for one chunk, chunk size)."""
    p = world.perception
    with torch.no_grad():
        full = _median_seconds(lambda: world.score(z), seconds)
        chunk = z[: world.chunk_size or len(z)]
        images = world.generate(chunk)
        pixels = p.pixels(images)
        work = p.work_images(images)
        lm = p.landmarks(work)
        c64, c32 = p.chips(pixels, lm, 64, CHIP_PADDING, work), p.chips(pixels, lm, 32, CHIP_PADDING, work)
        c150 = p.chips(pixels, lm, 150, DEFAULT_PADDING, work)
        budget = seconds / 4
        stages = {
            "generator": _median_seconds(lambda: world.generator(chunk), budget),
            "upsample_256": _median_seconds(lambda: p.work_images(images), budget),
            "landmarks": _median_seconds(lambda: p.landmarks(work), budget),
            "chips": _median_seconds(
                lambda: (
                    p.chips(pixels, lm, 64, CHIP_PADDING, work),
                    p.chips(pixels, lm, 32, CHIP_PADDING, work),
                    p.chips(pixels, lm, 150, DEFAULT_PADDING, work),
                ),
                budget,
            ),
            "age": _median_seconds(lambda: p.age_model(c64), budget),
            "gender": _median_seconds(lambda: p.gender_model(c32), budget),
            "identity": _median_seconds(lambda: p.identity_model(c150), budget),
        }
    return full, stages, len(chunk)


def _env_step_times(cfg, world, seconds: float) -> dict:
    """One batched env step of the default MDP vs bare scoring of as many faces (ms)."""
    env = LatentAgeEnv.from_config(world, cfg)
    env.reset(seed=0)
    noise = torch.Generator().manual_seed(0)
    step = _median_seconds(
        lambda: env.step(torch.rand(env.num_envs, env.action_dim, generator=noise) * 2 - 1), seconds
    )
    z = env.z.clone()
    with torch.no_grad():
        score = _median_seconds(lambda: world.score(z), seconds / 2)

    # the env's own scoring with its directions, drift measured from the start faces as mid-episode
    directions = _median_seconds(lambda: env._score(z, env.identity0), seconds / 2)
    return {
        "num_envs": env.num_envs,
        "keep": list(env.keep),
        "backward_passes": 1 + len(env.keep),
        "step_ms": 1e3 * step,
        "score_ms": 1e3 * score,
        "score_with_directions_ms": 1e3 * directions,
        "directions_ms": 1e3 * (directions - score),
        "step_over_score_with_directions": step / directions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = ["device=cpu", f"perception.runtime={args.runtime}"]
    cfg = compose_config("sample", overrides)
    world = build_world(cfg)
    results = []
    for b in sorted(args.batches):
        z = world.sample_latents(range(b))
        full, stages, chunk_len = _stage_times(world, z, args.seconds)
        n_chunks = -(-b // chunk_len)
        stage_total = sum(stages.values()) * n_chunks
        floor = sum(stages[k] for k in NETWORK_STAGES) * n_chunks
        row = {
            "batch": b,
            "faces_per_s": b / full,
            "ms_per_call": 1e3 * full,
            "stages_ms_per_chunk": {k: 1e3 * v for k, v in stages.items()},
            "call_over_stage_sum": full / stage_total,
            "networks_ms_per_call": 1e3 * floor,
            "call_over_networks": full / floor,
            "alignment_share": 1 - sum(stages[k] for k in NETWORK_STAGES) / sum(stages.values()),
            "peak_rss_mb": _peak_rss_mb(),
        }
        results.append(row)
        parts = ", ".join(f"{k} {v:.1f}" for k, v in row["stages_ms_per_chunk"].items())
        print(
            f"batch {b:4d}: {row['faces_per_s']:7.1f} faces/s ({row['ms_per_call']:.1f} ms/call; "
            f"call / sum of stages = {row['call_over_stage_sum']:.2f}; call / networks' forward = "
            f"{row['call_over_networks']:.2f}; alignment {100 * row['alignment_share']:.0f}% of the stages; "
            f"peak RSS {row['peak_rss_mb']:.0f} MB) | ms per chunk of {chunk_len}: {parts}"
        )
    report = {"threads": args.threads, "runtime": args.runtime, "results": results}
    z = world.sample_latents(range(max(args.batches)))
    report["landmarks_ms_per_chunk"] = marks = _landmark_backends(world, z, args.seconds / 2)
    print("landmarks per chunk: " + ", ".join(f"{k} {v:.1f} ms" for k, v in marks.items()))
    if args.runtime == "torch":  # the default MDP's directions need the differentiable runtime
        report["env_step"] = step = _env_step_times(compose_config("train", overrides), world, args.seconds)
        print(
            f"env step ({step['num_envs']} episodes, keep {step['keep']}): {step['step_ms']:.0f} ms; bare score "
            f"{step['score_ms']:.0f} ms, + {step['backward_passes']} backward passes {step['score_with_directions_ms']:.0f} ms; "
            f"step / (score + directions) = {step['step_over_score_with_directions']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
