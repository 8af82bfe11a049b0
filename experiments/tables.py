"""Reproduce the results tables from scratch: ``make table1 PROFILE=quick`` runs ``python experiments/tables.py
table1 --profile quick``.

Each table trains what it needs with ``agelatent-train`` (a Hydra multirun over ``conf/experiment/<table>.yaml``
where it sweeps), evaluates the trained policies on the *test* faces with the comparison of
:mod:`agelatent.evaluation.comparison`, and writes ``results/<table>/<table>.md`` + ``.csv`` (plus
plots/grids). The profiles (``--profile``) are ``conf/table_profile/<name>.yaml``: which training profile
the runs use and how many test faces and targets the evaluation takes. The whole table is one job
(:func:`agelatent.runs.run_job`): a failure leaves ``results/<table>/FAILED.txt``.

Tables:
    table1   methods comparison: SAC policy vs local-linear walk, global direction, gradient descent, random walk
    table2   identity-threshold sweep (hard bound 0.4/0.5/0.6) with a Pareto plot (age error vs identity)
    table3   reward-term ablation (one term off per run)
    table4   target conditioning (absolute/relative) x action parameterisation (full/local_linear)
    figures  edit grids (faces x target ages) of the table-1 policy and the baselines, and the policy's learning
             curves on the validation faces (learning_curves.png/.csv)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from agelatent.config import CONFIG_DIR, compose_config
from agelatent.evaluation.comparison import evaluate
from agelatent.evaluation.curves import curves
from agelatent.reports.tables import protocol_note, write_table
from agelatent.runs import RunDir, run_job

PROFILES = sorted(p.stem for p in (Path(CONFIG_DIR) / "table_profile").glob("*.yaml"))
TRAIN = [sys.executable, "-m", "agelatent.cli.train"]


def _run(cmd: list[str]) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=os.environ | {"HYDRA_FULL_ERROR": "1"}).returncode


def _eval_cfg(
    profile, policy: Path | None, editors: list[str] | None, *extra: str, profile_targets: bool = True
):
    """agelatent-eval's config for a table: ``editors`` None runs conf/eval.yaml's (every editor); the
    profile's ``targets`` (where it has them and ``profile_targets``), else the protocol's."""
    overrides = [
        f"protocol.num_faces={profile.num_faces}",
        *(
            [f"protocol.targets=[{','.join(str(t) for t in profile.targets)}]"]
            if profile_targets and profile.get("targets")
            else []
        ),
        *([f"editors=[{','.join(editors)}]"] if editors is not None else []),
        f"editor_settings.global_direction.num_samples={profile.direction_samples}",
        "logger=none",
        *profile.get("eval_overrides", []),
        *extra,
    ]
    if policy is not None:
        overrides.append(f"policy={policy}")
    return compose_config("eval", overrides)


def _sweep(table: str, profile, out: Path, *extra: str) -> list[tuple[Path, list[str]]]:
    """Multirun ``conf/experiment/<table>.yaml``; returns (job dir, overrides) per job, failed ones included."""
    sweep_dir = out / "runs"
    code = _run(
        [
            *TRAIN,
            "-m",
            f"experiment={_experiment(table)}",
            f"profile={profile.train_profile}",
            *profile.get("train_overrides", []),
            f"hydra.sweep.dir={sweep_dir}",
            f"logger.wandb.group={table}",
            *extra,
        ]
    )
    jobs = []
    for job in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        jobs.append(
            (
                job,
                [
                    o
                    for o in overrides
                    if not o.startswith(("experiment=", "profile=", "logger.wandb.group="))
                ],
            )
        )
    if code:
        print(f"{table}: some training jobs failed (see FAILED.txt in their run dirs); tabulating the rest")
    return jobs


def _experiment(table: str) -> str:
    return {
        "table1": "table1_methods",
        "table2": "table2_identity",
        "table3": "table3_reward_ablation",
        "table4": "table4_conditioning",
    }[table]


def table1(profile, out: Path) -> None:
    runs = out / "runs"
    code = _run(
        [
            *TRAIN,
            f"experiment={_experiment('table1')}",
            f"profile={profile.train_profile}",
            *profile.get("train_overrides", []),
            f"paths.runs_dir={runs}",
            "logger.wandb.group=table1",
        ]
    )
    policy = RunDir(runs / "table1_policy")
    if code:
        raise RuntimeError(f"table1: training failed (exit {code}); see {policy.failed}")
    rows = evaluate(_eval_cfg(profile, policy.path, None), out / "eval")
    write_table(rows, out / "table1", title="Table 1: editing methods on held-out faces", note=_note(profile))


def _note(profile) -> str:
    """What the numbers are: the profile, then the protocol as the evaluations composed it."""
    protocol = _eval_cfg(profile, None, ["random_walk"]).protocol
    return f"Profile `{profile.name}`: training `profile={profile.train_profile}`; " + protocol_note(
        protocol, _max_steps(), None
    )


def _max_steps() -> int:
    return int(compose_config("train").env.max_steps)


def table2(profile, out: Path) -> None:
    rows: list[dict[str, Any]] = []
    for job, overrides in _sweep("table2", profile, out):
        if RunDir(job).has_failed():
            rows.append({"setting": " ".join(overrides), "editor": "FAILED"})
            continue
        bound = RunDir(job).load_config().identity.hard_bound
        editors = ["sac_policy", "local_linear_walk", "global_direction"]
        for r in evaluate(_eval_cfg(profile, job, editors), out / "eval" / job.name):
            rows.append({"setting": f"hard bound {bound:g}", **r})
    write_table(
        rows,
        out / "table2",
        title="Table 2: identity-threshold sweep",
        key=("setting", "editor"),
        note=_note(profile),
    )
    _pareto(rows, out / "table2_pareto.png")


def _pareto(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for editor in dict.fromkeys(r["editor"] for r in rows if r["editor"] != "FAILED"):
        pts = [r for r in rows if r["editor"] == editor]
        ax.errorbar(
            [r["similarity"] for r in pts],
            [r["age_error"] for r in pts],
            yerr=[
                [r["age_error"] - r["age_error_low"] for r in pts],
                [r["age_error_high"] - r["age_error"] for r in pts],
            ],
            marker="o",
            capsize=3,
            label=editor,
        )
        for r in pts:
            ax.annotate(
                r["setting"].replace("hard bound ", "b="), (r["similarity"], r["age_error"]), fontsize=7
            )
    ax.set_xlabel("identity similarity to the start face (higher is better)")
    ax.set_ylabel("final age error, years (lower is better)")
    ax.set_title("Age error vs identity across hard bounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _policy_table(table: str, title: str, profile, out: Path) -> None:
    rows: list[dict[str, Any]] = []
    for job, overrides in _sweep(table, profile, out):
        setting = " ".join(overrides) or "(defaults)"
        if RunDir(job).has_failed():
            rows.append({"setting": setting, "editor": "FAILED"})
            continue
        (r,) = evaluate(_eval_cfg(profile, job, ["sac_policy"]), out / "eval" / job.name)
        rows.append({"setting": setting, **r})
    write_table(rows, out / table, title=title, key="setting", note=_note(profile))


def figures(profile, out: Path, results: Path) -> None:
    policy = RunDir(results / "table1" / "runs" / "table1_policy")
    if policy.has_failed():
        print("figures: training the table-1 policy first")
        table1(profile, results / "table1")
    cfg = _eval_cfg(
        profile,
        policy.path,
        None,
        f"protocol.num_faces={profile.grid_faces}",
        f"protocol.grid_faces={profile.grid_faces}",
        profile_targets=False,  # the protocol's own target grid: the figures show every target age
    )
    evaluate(cfg, out / "eval")
    for png in (out / "eval").glob("grid_*.png"):
        shutil.copy(png, out / png.name.replace("grid_", "edits_"))
    # its learning curves: every policy snapshot on the validation faces, three judges
    curves(
        policy.path,
        out / "curves",
        [
            f"protocol.num_faces={profile.curve_faces}",
            *profile.get("eval_overrides", []),
        ],
        every=profile.curve_every,
    )
    shutil.copy(out / "curves" / "curves.png", out / "learning_curves.png")
    shutil.copy(out / "curves" / "curves.csv", out / "learning_curves.csv")


def build(cfg, job: RunDir) -> dict[str, Any]:
    """One table (``cfg.table``) under ``cfg.profile`` into the job's directory; the job :func:`main` guards."""
    out = job.path
    profile, table, results = cfg.profile, cfg.table, out.parent
    if table == "table1":
        table1(profile, out)
    elif table == "table2":
        table2(profile, out)
    elif table == "table3":
        _policy_table("table3", "Table 3: reward-term ablation (SAC policy)", profile, out)
    elif table == "table4":
        _policy_table(
            "table4", "Table 4: target conditioning x action parameterisation (SAC policy)", profile, out
        )
    else:
        figures(profile, out, results)
    for md in sorted(out.glob("*.md")):
        print(md.read_text())
    print(f"wrote {out}")
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", choices=["table1", "table2", "table3", "table4", "figures"])
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--fresh", action="store_true", help="delete the table's previous outputs first")
    args = parser.parse_args()
    out = args.results / args.table
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = OmegaConf.load(Path(CONFIG_DIR) / "table_profile" / f"{args.profile}.yaml")
    profile.name = args.profile
    cfg = OmegaConf.create({"table": args.table, "profile": profile, "seed": None})
    run_job(cfg, RunDir(out), build)


if __name__ == "__main__":
    main()
