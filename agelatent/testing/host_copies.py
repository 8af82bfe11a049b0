"""Host<->device copies in a ``torch.profiler`` trace: find them, trace them to code, check them against a list.

A GPU training loop should keep its tensors on the device. This module reads a Chrome trace exported by
``torch.profiler`` (CUDA activity on, ``with_stack=True``) and finds every ``Memcpy HtoD``/``DtoH``, each traced
back to the CUDA call that issued it: the torch op and the Python frames around that call
(:func:`trace_copies`). :func:`check_copies` accepts a copy only if an :class:`AllowedCopy` names its site (the
innermost agelatent function on the stack), its direction and a size bound; :func:`allowed_copies` is that
list for the env-step/SAC-update loop, each entry with its reason. :func:`copy_report` is the verdict on one
profiled window, which also fails a window that did not run what it was meant to watch.

Used by ``experiments/gpu_smoke.py`` on a GPU and tested on CPU traces with injected device events
(``tests/test_gpu_smoke.py``).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "AllowedCopy",
    "HostDeviceCopy",
    "allowed_copies",
    "check_copies",
    "copy_report",
    "covered",
    "describe",
    "project_files",
    "trace_copies",
    "trace_counts",
]

_MEMCPY = re.compile(r"^Memcpy (HtoD|DtoH)\b")
#: Python frames as the profiler names them: "/path/to/file.py(123): function".
_FRAME = re.compile(r"^(?P<file>.+)\((?P<line>\d+)\): (?P<function>.+)$")
_RUNTIME_CATEGORIES = ("cuda_runtime", "cuda_driver")


@dataclass(frozen=True)
class HostDeviceCopy:
    """One host<->device copy found in a profiler trace."""

    direction: str  # "HtoD" | "DtoH"
    nbytes: int | None  # as CUPTI reports it (None if the trace does not say)
    op: str | None  # innermost torch op around the CUDA call that issued it (None: not issued by a torch op)
    stack: tuple[str, ...]  # Python frames around that call, innermost first ("file(line): function")


@dataclass(frozen=True)
class AllowedCopy:
    """A copy the check accepts: issued with ``function`` in ``file`` as the innermost project frame."""

    file: str  # path suffix, e.g. "agelatent/env/latent_age.py"
    function: str
    directions: tuple[str, ...]
    max_bytes: int
    reason: str

    @property
    def site(self) -> str:
        return f"{self.file}:{self.function}"


def _frame(name: str) -> tuple[str, str] | None:
    """(file with forward slashes, function) of a profiler Python frame name, or None for built-ins."""
    m = _FRAME.match(name)
    return (m["file"].replace("\\", "/"), m["function"]) if m else None


def _same_file(path: str, suffix: str) -> bool:
    """Does a profiler frame's file (absolute, or relative to a ``sys.path`` entry) name ``suffix``?"""
    return path == suffix or path.endswith("/" + suffix)


class _Intervals:
    """Complete ("X") trace events of one thread, sorted by start, for innermost-containing lookups."""

    def __init__(self, events: list[dict]) -> None:
        self.events = sorted(events, key=lambda e: e["ts"])
        self.starts = [e["ts"] for e in self.events]
        self.by_python_id = {
            e["args"]["Python id"]: e for e in self.events if "Python id" in e.get("args", {})
        }

    def innermost(self, t: float) -> dict | None:
        """The latest-starting event that contains ``t`` (events on one thread nest)."""
        i = bisect.bisect_right(self.starts, t) - 1
        while i >= 0:
            e = self.events[i]
            if e["ts"] + e.get("dur", 0) >= t:
                return e
            i -= 1
        return None

    def containing(self, t: float) -> list[dict]:
        """Every event that contains ``t``, innermost first."""
        i = bisect.bisect_right(self.starts, t) - 1
        return [e for e in reversed(self.events[: i + 1]) if e["ts"] + e.get("dur", 0) >= t]


def _by_thread(events: Iterable[dict]) -> dict:
    threads: dict = {}
    for e in events:
        threads.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    return {k: _Intervals(v) for k, v in threads.items()}


def _python_stack(frames: _Intervals | None, t: float) -> tuple[str, ...]:
    if frames is None:
        return ()
    inner = frames.innermost(t)
    if inner is None:
        return ()
    if "Python id" not in inner.get("args", {}):  # no parent links in this trace: nest by time
        return tuple(e["name"] for e in frames.containing(t))
    stack, e = [], inner
    while e is not None:
        stack.append(e["name"])
        e = frames.by_python_id.get(e["args"].get("Python parent id"))
    return tuple(stack)


def trace_copies(trace: dict) -> list[HostDeviceCopy]:
    """Every ``Memcpy HtoD``/``DtoH`` of a Chrome trace exported by ``torch.profiler`` (CUDA activity on,
    ``with_stack=True`` for the Python frames), each traced back to the CUDA call that issued it: the torch op
    and the Python frames around that call on its thread. Device-to-device copies are not host copies."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e]
    memcpys = [e for e in events if _MEMCPY.match(e.get("name", ""))]
    if not memcpys:
        return []
    runtime = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in _RUNTIME_CATEGORIES and "correlation" in e.get("args", {})
    }
    cpu_ops = [e for e in events if e.get("cat") == "cpu_op"]
    ops_by_external = {e["args"]["External id"]: e for e in cpu_ops if "External id" in e.get("args", {})}
    ops = _by_thread(cpu_ops)
    frames = _by_thread(e for e in events if e.get("cat") == "python_function")
    copies = []
    for m in memcpys:
        args = m.get("args", {})
        call = runtime.get(args.get("correlation"))
        if call is None:  # no runtime event: fall back on the torch op that launched it, if any
            call = ops_by_external.get(args.get("External id"))
        op, stack = None, ()
        if call is not None:
            thread = (call.get("pid"), call.get("tid"))
            t = call["ts"] + min(call.get("dur", 0), 0.001)  # just inside the call
            inner_op = ops[thread].innermost(t) if thread in ops else None
            op = inner_op["name"] if inner_op is not None else None
            stack = _python_stack(frames.get(thread), t)
        nbytes = args.get("bytes")
        copies.append(
            HostDeviceCopy(
                _MEMCPY.match(m["name"])[1], int(nbytes) if nbytes is not None else None, op, stack
            )
        )
    return copies


def trace_counts(trace: dict) -> dict[str, int]:
    """How much the trace saw: events per category (kernel, gpu_memcpy, cpu_op, python_function, ...)."""
    return dict(Counter(e.get("cat", "?") for e in trace.get("traceEvents", []) if e.get("ph") == "X"))


def covered(trace: dict, sites: Sequence[str]) -> dict[str, bool]:
    """For each ``"file suffix:function"`` in ``sites``: did the trace record a call of it?"""
    seen = set()
    for e in trace.get("traceEvents", []):
        if e.get("cat") == "python_function" and (frame := _frame(e.get("name", ""))) is not None:
            seen.add(frame)
    out = {}
    for site in sites:
        file, function = site.rsplit(":", 1)
        out[site] = any(f == function and _same_file(path, file) for path, f in seen)
    return out


def _project_frame(copy: HostDeviceCopy, project_files: Sequence[str]) -> tuple[str, str] | None:
    """The innermost frame in one of ``project_files`` (path suffixes), as (file, function)."""
    for name in copy.stack:
        frame = _frame(name)
        if frame is not None and any(_same_file(frame[0], p) for p in project_files):
            return frame
    return None


def describe(copy: HostDeviceCopy, project_files: Sequence[str] = ()) -> str:
    """One line: direction, size, op and the frames that issued it (project frames first, then the caller)."""
    size = f"{copy.nbytes} B" if copy.nbytes is not None else "? B"
    frames = [n for n in copy.stack if (f := _frame(n)) and any(_same_file(f[0], p) for p in project_files)]
    where = " < ".join((frames or list(copy.stack))[:4]) or "no Python frame (another thread?)"
    return f"{copy.direction} {size} by {copy.op or 'no torch op'} at {where}"


def check_copies(
    copies: Sequence[HostDeviceCopy], allowed: Sequence[AllowedCopy], project_files: Sequence[str]
) -> dict:
    """Split ``copies`` into allowed (counted per rule) and offending (described).

    A copy is allowed by a rule when its innermost project frame (``project_files``: path suffixes of the
    project's modules) is the rule's function in the rule's file, its direction is one the rule names, and its
    size is within the rule's bound. Copies with no project frame are never allowed.
    """
    counts = Counter()
    offending = []
    for copy in copies:
        frame = _project_frame(copy, project_files)
        rule = next(
            (
                r
                for r in allowed
                if frame is not None
                and _same_file(frame[0], r.file)
                and frame[1] == r.function
                and copy.direction in r.directions
                and (copy.nbytes is None or copy.nbytes <= r.max_bytes)
            ),
            None,
        )
        if rule is None:
            offending.append(describe(copy, project_files))
        else:
            counts[rule.site] += 1
    return {"copies": len(copies), "allowed": dict(counts), "offending": offending}


def project_files() -> list[str]:
    """Path suffixes ("agelatent/env/latent_age.py", ...) of every module of the agelatent package."""
    import agelatent

    root = Path(agelatent.__file__).resolve().parent
    return sorted(str(p.relative_to(root.parent)).replace("\\", "/") for p in root.rglob("*.py"))


def allowed_copies(num_envs: int, latent_dim: int) -> tuple[AllowedCopy, ...]:
    """The copies the env-step/update loop may make, and why (sizes: ``num_envs`` rows of ``latent_dim``)."""
    flag = 8  # one bool or int64 count
    rows = num_envs * latent_dim * 4  # one float32 latent per row
    rule = AllowedCopy
    return (
        rule(
            "agelatent/env/latent_age.py",
            "step_latent",
            ("DtoH",),
            flag,
            "which rows are active or finished steers Python control flow: active.nonzero() (score only "
            "active rows), boolean-mask writes of outcome codes, bool(done.any()) before auto-reset; one "
            "count or flag each",
        ),
        rule(
            "agelatent/env/latent_age.py",
            "record_finished",
            ("DtoH",),
            flag,
            "episode statistics (success, identity loss, age error, similarity, length) are summed into "
            "Python floats when episodes end",
        ),
        rule(
            "agelatent/env/latent_age.py",
            "start_episodes",
            ("DtoH", "HtoD"),
            num_envs * 4,
            "restarting finished rows: the env's CPU generator draws targets from the start ages (ages "
            "down, targets up, one float per restarted row); only on steps where episodes end",
        ),
        rule(
            "agelatent/generators/stylegan2.py",
            "sample_latents",
            ("HtoD",),
            rows,
            "start faces of restarted rows: z comes from one CPU generator per seed (a seed is the same "
            "face in any batch, on any device), is uploaded, then mapped to W on the device; only when "
            "episodes end",
        ),
        rule(
            "agelatent/generators/latents.py",
            "sample_latents",
            ("HtoD",),
            rows,
            "start latents of restarted rows for generators with the standard-normal prior: one CPU generator "
            "per seed (a seed is the same face in any batch, on any device), then uploaded; only when episodes end",
        ),
        rule(
            "agelatent/geometry.py",
            "warp_affine",
            ("HtoD",),
            48,
            "the fixed 2x3 alignment matrix is composed in numpy float64 and uploaded on every call (24 "
            "bytes per chip kind); a per-device cache would remove it",
        ),
        rule(
            "agelatent/perception/base.py",
            "check_finite",
            ("DtoH",),
            flag,
            'NaN/Inf guard on each network\'s outputs (docs/design.md, "Reliability"): one flag per network call',
        ),
        rule(
            "agelatent/agent/sac.py",
            "update",
            ("DtoH",),
            flag,
            "NaN/Inf guard on the three SAC losses: one flag per update",
        ),
        rule(
            "agelatent/agent/sac.py",
            "record_episodes",
            ("DtoH",),
            num_envs * 8,
            "returns and lengths of finished episodes for the rollout/* metrics: a flag, then at most one "
            "value per row",
        ),
        rule(
            "agelatent/agent/sac.py",
            "log_step",
            ("HtoD", "DtoH"),
            flag,
            "metrics on logging steps only (every log_every_n_steps): Lightning's self.log turns each "
            "Python number into a one-element device tensor",
        ),
    )


def copy_report(
    name: str,
    trace: dict,
    coverage: Sequence[str],
    allowed: Sequence[AllowedCopy],
    device: torch.device,
    **extra,
) -> dict:
    """The copy check of one profiled window (without CUDA activity on a GPU it fails: it proves nothing)."""
    counts = trace_counts(trace)
    result = check_copies(trace_copies(trace), allowed, project_files())
    seen = covered(trace, coverage)
    problems = [f"the window never ran {site}" for site, ok in seen.items() if not ok]
    device_events = counts.get("kernel", 0) + counts.get("gpu_memcpy", 0)
    if device.type == "cuda" and device_events == 0:
        problems.append("the profiler recorded no CUDA activity (is CUPTI available?): nothing was checked")
    problems += [f"offending copy: {line}" for line in result["offending"]]
    return {
        "loop": name,
        **extra,
        "cpu_ops": counts.get("cpu_op", 0),
        "device_events": device_events,
        "covered": seen,
        **result,
        "problems": problems,
        "passed": not problems,
    }
