"""GPU smoke check of the paper-grade world: StyleGAN2 + insightface on CUDA, end to end, in a few minutes.

    python experiments/gpu_smoke.py [--json PATH] [--device cuda] [--quick] [--workdir DIR]
    make gpu-smoke

Writes random-weight stand-ins in the real formats into a temporary directory (StyleGAN2 in
rosinality/stylegan2-pytorch format at 256 and 1024 px with the FFHQ config-f widths, channel multiplier 2;
insightface ``w600k_r50.onnx`` + ``genderage.onnx`` with the real signatures), builds the worlds through Hydra
exactly as a user would, and then:

1. throughput: ``world.generate`` and ``world.score`` images/s at a couple of batch sizes, per perception
   runtime (``torch``; ``onnxruntime`` when its CUDA execution provider is installed: I/O binding);
2. a few hundred SAC environment steps on the 256 px world (``LatentAgeEnv``, local-linear actions with
   autograd age directions, ``SACModule`` under a Lightning ``Trainer`` on the GPU);
3. one small evaluation (``run_edits`` with the local-linear walk, then ``summarise``);
4. the copy check: a window of batched steps of that training loop (env step + SAC updates + Lightning's own
   per-step work), and one of env steps on the onnxruntime world, run under ``torch.profiler`` with CUDA
   activity; every ``Memcpy HtoD``/``DtoH`` in the window is traced back to the Python frame that issued it.
   A copy passes only if :func:`~agelatent.testing.host_copies.allowed_copies` names its site (the innermost
   agelatent function on the stack), its direction and a size bound, with the reason; anything else fails the
   run with the offending ops listed. The window must also have covered an env step, a SAC update, an episode restart and a logging
   step, so the check cannot pass by watching nothing.

The allowed copies are small by construction: flags and counts that steer Python control flow, NaN guards,
metrics on logging steps, the alignment matrix of the insightface crops, and the start latents and targets of
restarted episodes (per-seed CPU generators keep a seed the same face in any batch). Any other copy (images,
latents of ongoing episodes, scores, replay samples, weights) fails the check. Prints a compact report;
``--json PATH`` also writes it. Exit status 1 when a check fails.

Without a CUDA device (and ``--device cuda``, the default) it prints "gpu-smoke: no CUDA device, skipping"
and exits 0. ``--device cpu --quick`` runs the same code at toy sizes on the CPU (there are no host<->device
copies there; tests/test_gpu_smoke.py tests the copy detector, :mod:`agelatent.testing.host_copies`, on
synthetic device events).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from agelatent.testing.host_copies import allowed_copies, copy_report


# --- plan ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorPlan:
    size: int
    channel_multiplier: int = 2
    channels: dict[int, int] | None = None  # None: the reference's widths for the multiplier
    style_dim: int = 512
    n_mlp: int = 8


@dataclass(frozen=True)
class Plan:
    generators: tuple[GeneratorPlan, ...]
    batches: dict[int, tuple[int, ...]]  # size -> batch sizes for the throughput table
    seconds: float  # time budget per throughput measurement
    num_envs: int
    max_steps: int
    batched_steps: int  # SAC training length, in batched env steps
    learning_starts: int
    batch_size: int
    updates_per_step: int
    hidden_sizes: tuple[int, ...]
    window_first: int  # first profiled batched step (batch index); the window is max_steps long
    eval_faces: int

    @property
    def sac_size(self) -> int:
        return self.generators[0].size


FULL = Plan(
    generators=(GeneratorPlan(256), GeneratorPlan(1024)),  # FFHQ config-f widths at 1024
    batches={256: (1, 32), 1024: (1, 8)},
    seconds=1.5,
    num_envs=32,
    max_steps=5,
    batched_steps=24,  # 768 env steps
    learning_starts=256,
    batch_size=256,
    updates_per_step=4,
    hidden_sizes=(256, 256),
    window_first=10,
    eval_faces=16,
)
QUICK = Plan(
    generators=(
        GeneratorPlan(32, channels={4: 32, 8: 32, 16: 16, 32: 8}, style_dim=32, n_mlp=2),
        GeneratorPlan(64, channels={4: 32, 8: 32, 16: 16, 32: 8, 64: 8}, style_dim=32, n_mlp=2),
    ),
    batches={32: (1, 4), 64: (1, 4)},
    seconds=0.05,
    num_envs=4,
    max_steps=3,
    batched_steps=10,
    learning_starts=16,
    batch_size=16,
    updates_per_step=2,
    hidden_sizes=(32, 32),
    window_first=5,
    eval_faces=4,
)
#: Loop functions the SAC window must have run (so the check watched the real loop, restarts and logging).
SAC_COVERAGE = (
    "agelatent/env/latent_age.py:step_latent",
    "agelatent/agent/sac.py:update",
    "agelatent/env/latent_age.py:start_episodes",
    "agelatent/agent/sac.py:log_step",
)
ENV_COVERAGE = ("agelatent/env/latent_age.py:step_latent", "agelatent/env/latent_age.py:start_episodes")


# --- helpers ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def write_stand_ins(root: Path, plan: Plan) -> dict:
    """Random-weight StyleGAN2 checkpoints (one per planned size) and an insightface pack under ``root``."""
    from agelatent.testing.standins import write_insightface_pack, write_stylegan2_checkpoint

    files = {"insightface": write_insightface_pack(root / "insightface"), "stylegan2": {}}
    for g in plan.generators:
        files["stylegan2"][g.size] = str(
            write_stylegan2_checkpoint(
                root / f"stylegan2-{g.size}-stand-in.pt",
                g.size,
                channel_multiplier=g.channel_multiplier,
                channels=g.channels,
                style_dim=g.style_dim,
                n_mlp=g.n_mlp,
            )
        )
    return files


def build(files: dict, size: int, device: torch.device, runtime: str):
    """A paper-grade world composed through Hydra as a user would (``agelatent-sample`` overrides)."""
    from agelatent.config import compose_config
    from agelatent.world import build_world

    overrides = [
        f"device={device}",
        "generator=stylegan2_ffhq",
        f"generator.path={files['stylegan2'][size]}",
        "perception=insightface",
        f"perception.recognition_path={files['insightface']['recognition']}",
        f"perception.genderage_path={files['insightface']['genderage']}",
        f"perception.runtime={runtime}",
        "score_chunk=null" if device.type == "cuda" else "score_chunk=32",
    ]
    return build_world(compose_config("sample", overrides))


def _images_per_s(fn, batch: int, device: torch.device, budget: float) -> float:
    fn()  # warm-up (cuDNN autotuning, lazy allocations)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 3:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def throughput(world, runtime: str, batches: Sequence[int], budget: float, with_generate: bool) -> list[dict]:
    rows = []
    for b in batches:
        z = world.sample_latents(range(b))
        row = {"size": world.generator.resolution, "runtime": runtime, "batch": b}
        with torch.no_grad():
            if with_generate:
                row["generate_images_per_s"] = _images_per_s(
                    lambda z=z: world.generate(z), b, world.device, budget
                )
            row["score_images_per_s"] = _images_per_s(lambda z=z: world.score(z), b, world.device, budget)
        rows.append(row)
    return rows


def train_config(*overrides: str):
    """``conf/train.yaml`` as ``agelatent-train`` composes it for the paper-grade world (ArcFace thresholds)."""
    from agelatent.config import compose_config

    return compose_config("train", ["identity=arcface", *overrides])


def make_env(world, *overrides: str, auto_reset: bool = True):
    """The MDP from the composed config, on ``world``."""
    from agelatent.env.latent_age import LatentAgeEnv

    return LatentAgeEnv.from_config(world, train_config(*overrides), auto_reset=auto_reset)


class Profiled:
    """``torch.profiler`` over a stretch of the loop (CUDA activity on a GPU, Python frames) -> trace dict."""

    def __init__(self, device: torch.device, trace_path: Path) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.device = device
        self.trace_path = trace_path
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.profiler = profile(activities=activities, with_stack=True)
        self.trace: dict | None = None

    def __enter__(self) -> Profiled:
        _sync(self.device)  # nothing from before the window lands inside it
        self.profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)  # every copy issued inside the window is recorded
        self.profiler.__exit__(*exc)
        self.profiler.export_chrome_trace(str(self.trace_path))
        self.trace = json.loads(self.trace_path.read_text())
        self.trace_path.unlink()


# --- the stages ---------------------------------------------------------------------------------------------
def run_sac(world, plan: Plan, device: torch.device, workdir: Path) -> tuple[dict, dict]:
    """A short SAC run on ``world`` with one profiled window of ``max_steps`` batched steps in its middle."""
    import lightning as L

    from agelatent.agent.sac import SACConfig, SACModule, sac_trainer

    mdp = (f"env.num_envs={plan.num_envs}", f"env.max_steps={plan.max_steps}", "action=local_linear")
    env = make_env(world, *mdp)
    cfg = SACConfig.from_config(
        train_config(
            f"agent.total_env_steps={plan.batched_steps * plan.num_envs}",
            f"agent.buffer_size={max(plan.batched_steps * plan.num_envs, plan.batch_size)}",
            f"agent.batch_size={plan.batch_size}",
            f"agent.learning_starts={plan.learning_starts}",
            f"agent.updates_per_step={plan.updates_per_step}",
            f"agent.hidden_sizes=[{','.join(str(h) for h in plan.hidden_sizes)}]",
        )
    )
    module = SACModule(env, cfg)
    # A window as long as an episode holds at least one restart per row and, with logging every max_steps
    # batches, exactly one logging step.
    first, last = plan.window_first, plan.window_first + plan.max_steps - 1
    if last >= plan.batched_steps or first * plan.num_envs < plan.learning_starts:
        raise ValueError("plan: the profiled window must lie after the warm-up and inside the run")

    class Window(L.Callback):
        def __init__(self) -> None:
            self.profiled: Profiled | None = None
            self.counters = (0, 0)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == first:
                self.counters = (pl_module.env_steps, pl_module.num_updates)
                self.profiled = Profiled(device, workdir / "sac_window.json").__enter__()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == last and self.profiled is not None:
                self.profiled.__exit__(None, None, None)
                steps, updates = self.counters
                self.counters = (pl_module.env_steps - steps, pl_module.num_updates - updates)

    window = Window()
    trainer = sac_trainer(
        accelerator="cuda" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,  # the world's GPU, not just any
        log_every_n_steps=plan.max_steps,
        callbacks=[window],
    )
    start = time.perf_counter()
    trainer.fit(module)
    _sync(device)
    seconds = time.perf_counter() - start
    sac = {
        "size": world.generator.resolution,
        "action_mode": "local_linear (autograd age directions)",
        "num_envs": plan.num_envs,
        "env_steps": module.env_steps,
        "updates": module.num_updates,
        "seconds": seconds,
        "env_steps_per_s": module.env_steps / seconds,
        "episodes": env.episode_metrics(),
    }
    if window.profiled is None or window.profiled.trace is None:
        raise RuntimeError("the SAC run ended before the profiled window closed")
    check = copy_report(
        "sac (torch runtime, local_linear autograd)",
        window.profiled.trace,
        SAC_COVERAGE,
        allowed_copies(plan.num_envs, world.latent_dim),
        device,
        env_steps=window.counters[0],
        updates=window.counters[1],
    )
    return sac, check


def run_env_window(world, plan: Plan, device: torch.device, workdir: Path) -> dict:
    """Env steps alone (full actions) on the onnxruntime world, one episode length profiled."""
    env = make_env(world, f"env.num_envs={plan.num_envs}", f"env.max_steps={plan.max_steps}", "action=full")
    env.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        env.step(torch.rand(env.num_envs, env.action_dim, generator=gen, device=device) * 2 - 1)

    for _ in range(2):
        step()
    with Profiled(device, workdir / "env_window.json") as profiled:
        for _ in range(plan.max_steps):
            step()
    return copy_report(
        "env (onnxruntime runtime, full actions)",
        profiled.trace,
        ENV_COVERAGE,
        allowed_copies(plan.num_envs, world.latent_dim),
        device,
        env_steps=plan.max_steps * plan.num_envs,
        updates=0,
    )


def run_evaluation(world, plan: Plan) -> dict:
    from agelatent.editors import LocalLinearWalk, run_edits
    from agelatent.evaluation.metrics import summarise

    n = plan.eval_faces
    env = make_env(world, f"env.num_envs={n}", f"env.max_steps={plan.max_steps}", auto_reset=False)
    protocol = train_config("protocol=test").protocol
    grid = torch.tensor([float(t) for t in protocol.targets])
    targets = grid[torch.arange(n) % len(grid)]
    walk = LocalLinearWalk.of_action(env.cfg.action)
    starts = world.sample_latents(range(protocol.first_seed, protocol.first_seed + n))
    result = run_edits(env, walk, starts, targets)
    summary = summarise(result, env.cfg.identity.hard_bound, protocol)
    keys = (
        "edits",
        "success_rate",
        "age_error",
        "similarity",
        "bound_rate",
        "world_calls_per_edit",
        "seconds_per_edit",
    )
    return {"editor": result.editor, **{k: summary[k] for k in keys}}


# --- report -------------------------------------------------------------------------------------------------
def print_report(report: dict) -> None:
    p = print
    p(
        f"gpu-smoke on {report['device']} ({report['device_name']}), torch {report['torch']}, "
        f"onnxruntime {report['onnxruntime']} (CUDA provider: {'yes' if report['ort_cuda'] else 'no'})"
        + (", quick" if report["quick"] else "")
    )
    gens = ", ".join(f"{g['size']}px ({g['parameters'] / 1e6:.2f}M params)" for g in report["generators"])
    p(f"stand-ins: StyleGAN2 {gens}; insightface w600k_r50 + genderage")
    p(f"{'size':>6} {'runtime':<12} {'batch':>5} {'generate/s':>11} {'score/s':>9}")
    for r in report["throughput"]:
        gen = f"{r['generate_images_per_s']:11.1f}" if "generate_images_per_s" in r else f"{'':>11}"
        p(f"{r['size']:>6} {r['runtime']:<12} {r['batch']:>5} {gen} {r['score_images_per_s']:9.1f}")
    s = report["sac"]
    p(
        f"sac: {s['env_steps']} env steps, {s['updates']} updates in {s['seconds']:.1f} s "
        f"({s['env_steps_per_s']:.1f} env steps/s), {s['num_envs']} envs, {s['size']}px, {s['action_mode']}"
    )
    e = report["evaluation"]
    p(
        f"evaluation: {e['editor']} on {e['edits']:.0f} faces: success {e['success_rate']:.2f}, "
        f"|age error| {e['age_error']:.1f} y, similarity {e['similarity']:.2f}, "
        f"{e['world_calls_per_edit']:.1f} world calls/edit"
    )
    for c in report["copy_checks"]:
        allowed = (
            ", ".join(f"{site.rsplit(':', 1)[1]} {n}" for site, n in sorted(c["allowed"].items())) or "none"
        )
        p(
            f"copy check, {c['loop']}: {c['env_steps']} env steps, {c['updates']} updates, "
            f"{c['device_events']} device events, {c['copies']} host<->device copies "
            f"(allowed: {allowed}): {'ok' if c['passed'] else 'FAILED'}"
        )
        for problem in c["problems"]:
            p(f"  - {problem}")
    for note in report["notes"]:
        p(f"note: {note}")
    p(f"{'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="toy sizes and few steps (tests, CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stand-in files here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-smoke: no CUDA device, skipping")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"skipped": "no CUDA device"}, indent=2))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    plan = QUICK if args.quick else FULL
    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agelatent-gpu-smoke-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(plan, device, workdir, quick=args.quick)
    report["seconds"] = time.perf_counter() - start
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def run(plan: Plan, device: torch.device, workdir: Path, quick: bool) -> dict:
    import onnxruntime

    # The MXNet-layout genderage (like the real file) makes onnxruntime warn about initializers listed as
    # graph inputs and its fixed [1, 3] output shape on every call: true, known, and noise in this report.
    onnxruntime.set_default_logger_severity(3)
    files = write_stand_ins(workdir, plan)
    # onnxruntime on a GPU only with its CUDA provider (I/O binding); on the CPU, its CPU provider is real.
    ort_usable = device.type == "cpu" or _ort_cuda()
    runtimes = ["torch"] + (["onnxruntime"] if ort_usable else [])
    notes = []
    if not ort_usable:
        notes.append(
            "onnxruntime has no CUDA execution provider here (install onnxruntime-gpu, not onnxruntime): the "
            "onnxruntime runtime was not measured or checked"
        )
    report: dict = {
        "device": str(device) if device.type == "cpu" else f"cuda:{device.index or 0}",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "ort_cuda": _ort_cuda(),
        "quick": quick,
        "generators": [],
        "throughput": [],
        "notes": notes,
    }
    worlds = {}
    for g in plan.generators:
        for runtime in runtimes:
            world = build(files, g.size, device, runtime)
            if runtime == "torch":
                report["generators"].append(
                    {
                        "size": g.size,
                        "channel_multiplier": g.channel_multiplier,
                        "channels": world.generator.channels,
                        "parameters": sum(p.numel() for p in world.generator.parameters()),
                        "file_mb": Path(files["stylegan2"][g.size]).stat().st_size / 2**20,
                    }
                )
            report["throughput"] += throughput(
                world, runtime, plan.batches[g.size], plan.seconds, with_generate=runtime == "torch"
            )
            if g.size == plan.sac_size:
                worlds[runtime] = world
    report["allowed_copies"] = [
        asdict(r) | {"site": r.site} for r in allowed_copies(plan.num_envs, worlds["torch"].latent_dim)
    ]
    report["sac"], sac_check = run_sac(worlds["torch"], plan, device, workdir)
    report["copy_checks"] = [sac_check]
    if "onnxruntime" in worlds:
        report["copy_checks"].append(run_env_window(worlds["onnxruntime"], plan, device, workdir))
    report["evaluation"] = run_evaluation(worlds["torch"], plan)
    report["passed"] = all(c["passed"] for c in report["copy_checks"]) and all(
        math.isfinite(r["score_images_per_s"]) for r in report["throughput"]
    )
    return report


if __name__ == "__main__":
    sys.exit(main())
