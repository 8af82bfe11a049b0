"""``agelatent-bench`` (``make bench``): every benchmark, one after another, then the Markdown report.

    agelatent-bench [--out results/bench] [--quick]

Runs the repository's ``experiments/bench_*.py`` scripts, each in its own process (so one bench's memory and
threads never colour the next), writing ``world.json``, ``sac.json``, ``editors.json``, ``identity.json`` and ``photos.json``
into ``--out``, then ``report.md`` there (``experiments/measurements.py``: the figures and the performance
targets, met or missed). ``--quick``: the tiny settings the test suite uses (seconds, not minutes; the numbers
are then meaningless, the report's structure is not). The scripts live in the checkout, not in the installed
package: run it from a clone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import agelatent

EXPERIMENTS = Path(agelatent.__file__).resolve().parents[1] / "experiments"

#: script -> (full arguments, quick arguments); the JSON path is added to both
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "world": ([], ["--batches", "1", "3", "--seconds", "0.01", "--threads", "1"]),
    "sac": (
        [],
        [
            "--obs-dim",
            "6",
            "--act-dim",
            "2",
            "--batch",
            "16",
            "--hidden",
            "8",
            "8",
            "--updates",
            "3",
            "--rounds",
            "2",
            "--threads",
            "1",
        ],
    ),  # fmt: skip
    "editors": ([], ["--faces", "1", "--editors", "random_walk", "local_linear_walk", "--threads", "1"]),
    "identity": ([], ["--batch", "2", "--rounds", "1"]),
    "photos": ([], ["--steps", "2", "--restarts", "1", "--limit", "1", "--threads", "1"]),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the plumbing only")
    args = parser.parse_args(argv)
    if not (EXPERIMENTS / "measurements.py").is_file():
        raise SystemExit(
            f"agelatent-bench runs the benchmark scripts in the repository's experiments/ folder, which is not "
            f"at {EXPERIMENTS}: run it from a clone of the repository (pip install -e .)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (full, quick) in BENCHES.items():
        script = EXPERIMENTS / f"bench_{name}.py"
        command = [
            sys.executable,
            str(script),
            *(quick if args.quick else full),
            "--json",
            str(args.out / f"{name}.json"),
        ]
        print(f"[agelatent-bench] {script.name}", flush=True)
        subprocess.run(command, check=True)
    report = args.out / "report.md"
    subprocess.run(
        [
            sys.executable,
            str(EXPERIMENTS / "measurements.py"),
            "--bench",
            str(args.out),
            "--out",
            str(report),
        ],
        check=True,
    )


if __name__ == "__main__":
    main()
