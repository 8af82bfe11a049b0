"""experiments/gpu_smoke.py on the CPU (the quick run end to end, the skip without CUDA) and its copy detector.

The script runs as a user runs it, in its own process. The detector (:mod:`agelatent.testing.host_copies`) is
tested in-process: there are no host<->device copies on a CPU, so on real CPU profiler traces (real ops, real
Python frames) into which CUDA runtime calls and memcpy activities are injected the way CUPTI reports them on a
GPU: a ``cuda_runtime`` call inside the torch op that issued it, and a ``gpu_memcpy`` event with the same
correlation id and its byte count.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agelatent.testing import host_copies as hc

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "gpu_smoke.py"
THIS_FILE = "test_gpu_smoke.py"  # the profiler names files relative to sys.path entries when it can


pytestmark = pytest.mark.usefixtures("one_thread")


def _run_script(*args: str) -> str:
    """``python experiments/gpu_smoke.py ARGS`` on one CPU thread: its stdout (rc != 0 fails with its output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


# --- the script ---------------------------------------------------------------------------------------------
def test_quick_cpu_run_reports_every_stage(tmp_path):
    out = tmp_path / "smoke.json"
    printed = _run_script("--device", "cpu", "--quick", "--threads", "1", "--json", str(out))
    assert "gpu-smoke on cpu" in printed and printed.rstrip().splitlines()[-1].startswith("PASSED")
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["device"] == "cpu" and report["quick"] is True
    assert [g["size"] for g in report["generators"]] == [32, 64]
    rows = {(r["size"], r["runtime"], r["batch"]) for r in report["throughput"]}
    assert rows == {(s, rt, b) for s in (32, 64) for rt in ("torch", "onnxruntime") for b in (1, 4)}
    assert all(r["score_images_per_s"] > 0 for r in report["throughput"])
    assert all(r["generate_images_per_s"] > 0 for r in report["throughput"] if r["runtime"] == "torch")
    sac = report["sac"]
    assert (sac["env_steps"], sac["updates"], sac["num_envs"]) == (40, 14, 4)  # 10 steps; updates from step 4
    assert sac["episodes"]["episodes"] >= 4
    ev = report["evaluation"]
    assert ev["editor"] == "local_linear_walk" and ev["edits"] == 4
    assert ev["success_rate"] * 4 == pytest.approx(round(ev["success_rate"] * 4))  # a count over 4 edits
    checks = {c["loop"].split()[0]: c for c in report["copy_checks"]}
    assert set(checks) == {"sac", "env"}
    assert (checks["sac"]["env_steps"], checks["sac"]["updates"]) == (
        12,
        6,
    )  # one episode length, 2 updates/step
    assert all(checks["sac"]["covered"].values()) and len(checks["sac"]["covered"]) == 4
    assert all(checks["env"]["covered"].values())
    for c in checks.values():
        assert c["passed"] and c["copies"] == 0 and c["offending"] == [] and c["cpu_ops"] > 0
    sites = {r["site"] for r in report["allowed_copies"]}
    assert "agelatent/env/latent_age.py:step_latent" in sites and all(
        r["reason"] for r in report["allowed_copies"]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the full smoke check")
def test_without_cuda_it_skips_and_exits_0(tmp_path):
    out = tmp_path / "smoke.json"
    assert _run_script("--json", str(out)).strip() == "gpu-smoke: no CUDA device, skipping"
    assert json.loads(out.read_text()) == {"skipped": "no CUDA device"}


def test_every_allowed_site_exists_in_the_code():
    files = set(hc.project_files())
    for rule in hc.allowed_copies(num_envs=4, latent_dim=8):
        assert rule.file in files, rule.file
        source = (ROOT / rule.file).read_text()
        assert re.search(rf"^\s*def {re.escape(rule.function)}\(", source, re.M), rule.site
        assert rule.max_bytes > 0 and set(rule.directions) <= {"HtoD", "DtoH"} and rule.reason


def test_every_loop_function_the_gpu_check_watches_exists_in_the_code():
    """The GPU check's coverage sites name functions by file and name: a rename fails here, on the CPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "experiments" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = smoke  # its dataclasses look their module up
    try:
        spec.loader.exec_module(smoke)
    finally:
        del sys.modules[spec.name]
    for site in (*smoke.SAC_COVERAGE, *smoke.ENV_COVERAGE):
        file, function = site.split(":")
        assert re.search(rf"^\s*def {re.escape(function)}\(", (ROOT / file).read_text(), re.M), site
        assert not function.startswith("_"), f"{site}: the check watches public names only"


# --- the copy detector on real CPU traces with injected device events ---------------------------------------
def _moves_data(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)  # aten::to -> aten::_to_copy -> aten::copy_


def _computes(x: torch.Tensor) -> torch.Tensor:
    return (x * 2).sum()


def _caller() -> None:
    x = torch.randn(64)
    _computes(x)
    _moves_data(x)


@pytest.fixture(scope="module")
def cpu_trace(tmp_path_factory):
    from torch.profiler import ProfilerActivity, profile

    _caller()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        _caller()
    path = tmp_path_factory.mktemp("trace") / "trace.json"
    prof.export_chrome_trace(str(path))
    return json.loads(path.read_text())


def _copy_op(trace: dict) -> dict:
    """The aten::copy_ issued inside _moves_data (found by time on the same thread, independently of hc)."""
    frame = next(
        e
        for e in trace["traceEvents"]
        if e.get("cat") == "python_function" and e["name"].endswith(": _moves_data")
    )
    return next(
        e
        for e in trace["traceEvents"]
        if e.get("cat") == "cpu_op"
        and e["name"] == "aten::copy_"
        and e["tid"] == frame["tid"]
        and frame["ts"] <= e["ts"] <= frame["ts"] + frame["dur"]
    )


def _inject(
    trace: dict, op: dict, direction: str, nbytes: int, correlation: int, *, runtime: bool = True
) -> dict:
    """A copy of ``trace`` with a cudaMemcpyAsync inside ``op`` and its memcpy activity (CUPTI's layout)."""
    events = list(trace["traceEvents"])
    if runtime:
        events.append(
            {
                "ph": "X",
                "cat": "cuda_runtime",
                "name": "cudaMemcpyAsync",
                "pid": op["pid"],
                "tid": op["tid"],
                "ts": op["ts"] + op["dur"] / 2,
                "dur": min(1.0, op["dur"] / 4),
                "args": {"External id": op["args"]["External id"], "correlation": correlation},
            }
        )
    kind = {"HtoD": "Pageable -> Device", "DtoH": "Device -> Pageable", "DtoD": "Device -> Device"}[direction]
    events.append(
        {
            "ph": "X",
            "cat": "gpu_memcpy",
            "name": f"Memcpy {direction} ({kind})",
            "pid": 0,
            "tid": 7,
            "ts": op["ts"] + op["dur"],
            "dur": 2.0,
            "args": {
                "External id": op["args"]["External id"],
                "device": 0,
                "stream": 7,
                "correlation": correlation,
                "bytes": nbytes,
            },
        }
    )
    return {**trace, "traceEvents": events}


def test_a_trace_without_device_copies_has_none(cpu_trace):
    counts = hc.trace_counts(cpu_trace)
    assert counts["cpu_op"] > 0 and counts["python_function"] > 0
    assert hc.trace_copies(cpu_trace) == []
    assert hc.covered(cpu_trace, [f"{THIS_FILE}:_moves_data", f"{THIS_FILE}:_never_called"]) == {
        f"{THIS_FILE}:_moves_data": True,
        f"{THIS_FILE}:_never_called": False,
    }


def test_an_injected_copy_is_traced_to_its_op_and_python_frames(cpu_trace):
    op = _copy_op(cpu_trace)
    (copy,) = hc.trace_copies(_inject(cpu_trace, op, "DtoH", 4096, correlation=987654))
    assert (copy.direction, copy.nbytes, copy.op) == ("DtoH", 4096, "aten::copy_")
    functions = [n.rsplit(": ", 1)[-1] for n in copy.stack if re.search(r"\(\d+\): ", n)]
    assert functions[:2] == ["_moves_data", "_caller"]  # innermost first, then its caller
    line = hc.describe(copy, [THIS_FILE])
    assert line.startswith("DtoH 4096 B by aten::copy_ at ") and ": _moves_data < " in line
    # without a runtime event the memcpy's External id still leads to the op that launched it
    (fallback,) = hc.trace_copies(_inject(cpu_trace, op, "HtoD", 24, correlation=1, runtime=False))
    assert (fallback.direction, fallback.op) == ("HtoD", "aten::copy_") and fallback.stack == copy.stack
    # device-to-device copies are not host copies
    assert hc.trace_copies(_inject(cpu_trace, op, "DtoD", 4096, correlation=2)) == []


def test_the_check_allows_only_the_named_site_direction_and_size(cpu_trace):
    copies = hc.trace_copies(_inject(cpu_trace, _copy_op(cpu_trace), "DtoH", 4096, correlation=5))

    def check(function="_moves_data", directions=("DtoH",), max_bytes=4096):
        rule = hc.AllowedCopy(THIS_FILE, function, directions, max_bytes, "test")
        return hc.check_copies(copies, [rule], [THIS_FILE])

    assert check() == {"copies": 1, "allowed": {f"{THIS_FILE}:_moves_data": 1}, "offending": []}
    for wrong in (
        check(max_bytes=4095),  # too big
        check(directions=("HtoD",)),  # wrong direction
        check(function="_caller"),  # a caller is not the site: the innermost project frame is
    ):
        assert wrong["allowed"] == {} and len(wrong["offending"]) == 1
        assert wrong["offending"][0].startswith("DtoH 4096 B by aten::copy_ at ")
    # a copy outside every project file is never allowed
    outside = hc.check_copies(
        copies,
        [hc.AllowedCopy(THIS_FILE, "_moves_data", ("DtoH",), 10**9, "test")],
        ["agelatent/world/base.py"],
    )
    assert outside["allowed"] == {} and len(outside["offending"]) == 1


def test_a_memcpy_nobody_issued_is_reported_as_such(cpu_trace):
    op = dict(_copy_op(cpu_trace), args={"External id": -1})  # an id no torch op has
    (copy,) = hc.trace_copies(_inject(cpu_trace, op, "HtoD", 8, correlation=3, runtime=False))
    assert (copy.op, copy.stack) == (None, ())
    result = hc.check_copies([copy], hc.allowed_copies(4, 8), hc.project_files())
    assert result["offending"] == ["HtoD 8 B by no torch op at no Python frame (another thread?)"]


def test_the_report_fails_a_window_that_proves_nothing(cpu_trace):
    ok = hc.copy_report("cpu", cpu_trace, [f"{THIS_FILE}:_moves_data"], [], torch.device("cpu"))
    assert ok["passed"] and ok["problems"] == []
    on_gpu = hc.copy_report("gpu", cpu_trace, [f"{THIS_FILE}:_never_called"], [], torch.device("cuda"))
    assert not on_gpu["passed"]
    assert any("never ran" in p and "_never_called" in p for p in on_gpu["problems"])
    assert any("no CUDA activity" in p for p in on_gpu["problems"])
    injected = _inject(cpu_trace, _copy_op(cpu_trace), "DtoH", 64, correlation=4)
    bad = hc.copy_report("cpu", injected, [], [], torch.device("cpu"))
    assert not bad["passed"] and bad["problems"] == [f"offending copy: {bad['offending'][0]}"]
