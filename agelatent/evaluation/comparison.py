"""Editors compared under one protocol (docs/design.md, "Evaluation"): every editor on the same held-out
faces x target grid, under the same MDP rules, scored by the reward's networks and optionally by a second
evaluator.

Rows of the results table are editors; columns are the metrics of :mod:`agelatent.evaluation.metrics`
with bootstrap 95% CIs, plus ``<evaluator>/<metric>`` columns for every configured second evaluator
(``conf/evaluator/``, :mod:`agelatent.evaluation.judges`: another perception, an independent age model, the
realness judge), which expose an editor that games the reward's own networks.

When a trained policy is evaluated, the MDP (the ``MDP_GROUPS``: env, action, identity, target) is taken
from its run's saved config, so the policy acts exactly as it was trained and the baselines face the same
rules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agelatent.editors import Editor, build_editor, run_edits
from agelatent.env.latent_age import MDP_GROUPS, LatentAgeEnv, LatentAgeEnvConfig
from agelatent.evaluation.held_out import check_protocol, held_out_edits
from agelatent.evaluation.judges import build_judges, check_judges
from agelatent.evaluation.metrics import summarise
from agelatent.reports.grids import edit_grid, editors_sheet
from agelatent.reports.tables import protocol_note, write_edits_csv, write_table
from agelatent.runs import RunDir

__all__ = ["editor_mdp", "evaluate", "validate", "validate_editors"]

log = logging.getLogger(__name__)


def editor_mdp(editor: Editor, mdp: LatentAgeEnvConfig) -> LatentAgeEnvConfig:
    """The MDP ``editor`` runs under: ``mdp`` (the policy's) with the action settings the editor needs
    (:meth:`~agelatent.editors.Editor.env_action`: the policy its trained ones, the walk ``local_linear`` with
    its own cap and kept quantities, the others the cheaper ``full`` mode -- same transition rules)."""
    try:
        return dataclasses.replace(mdp, action=editor.env_action(mdp.action))
    except ValueError as err:
        raise ValueError(f"editor_settings.{editor.name}: {err}") from None


def validate(cfg: DictConfig) -> tuple[LatentAgeEnvConfig, dict[str, Editor]]:
    """Every config error before any model loads; returns the MDP the editors run under and the editors."""
    from agelatent.world import check_run_settings, perception_class

    check_run_settings(cfg)
    check_protocol(cfg.protocol, perception_class(cfg).age_range, "protocol")
    check_judges(cfg.get("evaluator"))
    return validate_editors(cfg)


def validate_editors(cfg: DictConfig) -> tuple[LatentAgeEnvConfig, dict[str, Editor]]:
    """The editors' part of :func:`validate` (also ``agelatent-edit``'s): each name in ``editors`` built from
    its ``editor_settings.<name>`` (no model loads), the MDP they run under (a policy's run's, when
    ``policy`` is set) and each editor's action settings checked against it."""
    known = list(cfg.editor_settings)
    unknown = [e for e in cfg.editors if e not in known]
    if unknown:
        raise ValueError(
            f"editors: unknown {unknown}; choose from {known}, or add one with "
            f"+editor_settings.{unknown[0]}={{_target_: <module>.<EditorClass>, ...}} (docs/extending.md)"
        )
    mdp_source = cfg
    if cfg.policy:
        run, _ = RunDir.of_policy(cfg.policy)
        mdp_source = _with_new_mdp_keys(run.load_config(), cfg) if run.config.is_file() else cfg
    editors = {name: build_editor(name, cfg.editor_settings[name]) for name in cfg.editors}  # before the MDP,
    # whose local_linear action reads the walk's settings: a bad one is named where it was set
    env_cfg = LatentAgeEnvConfig.from_config(mdp_source)
    for editor in editors.values():
        editor_mdp(editor, env_cfg)
    return env_cfg, editors


# MDP settings added after runs were trained with them absent, and the value that reproduces what such a run
# did (which is not always today's default: the policy has observed the face and kept identity and gender
# since the defaults changed to them).
BEHAVIOUR_BEFORE_KEY = {
    ("action", "keep"): [],
    ("action", "residual"): False,
    ("env", "observe_face"): False,
}


def _with_new_mdp_keys(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """A run's saved config, with MDP settings added to the code after the run was trained filled in, each
    named in the log: by the behaviour the code had before the key existed (``BEHAVIOUR_BEFORE_KEY``), else
    by the current default. A key the run has is never changed."""
    merged = run_cfg.copy()
    for group in MDP_GROUPS:
        for key in cfg[group]:
            if key not in run_cfg[group]:
                value = BEHAVIOUR_BEFORE_KEY.get((group, key), cfg[group][key])
                log.warning(
                    "the policy's run config predates %s.%s; using %s, the behaviour before it existed",
                    group,
                    key,
                    value,
                )
                merged[group][key] = value
    return merged


def evaluate(cfg: DictConfig, out_dir: Path, world=None) -> list[dict[str, Any]]:
    """Run the protocol; writes ``results.csv``, ``results.md``, ``edits.csv``, ``grid_<editor>.png`` and
    ``editors.png`` (every editor on the first ``protocol.sheet_faces`` faces)."""
    env_cfg, editors = validate(cfg)
    if world is None:
        from agelatent.world import build_world

        world = build_world(cfg)
    judges = build_judges(cfg.get("evaluator"), world)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol = cfg.protocol
    targets = [float(t) for t in protocol.targets]
    starts, target_t, seeds = held_out_edits(world, protocol)
    rows, results = [], {}
    for name, editor in editors.items():
        env = LatentAgeEnv.for_edits(world, editor_mdp(editor, env_cfg), len(seeds))
        result = run_edits(env, editor, starts, target_t)
        summary = summarise(result, env_cfg.identity.hard_bound, protocol)
        for judge_name, judge in judges.items():
            ev = judge.summary(result, env_cfg.identity.hard_bound, protocol)
            summary.update({f"{judge_name}/{k}": v for k, v in ev.items()})
        rows.append({"editor": name, **summary})
        results[name] = result
        edit_grid(result, targets, min(protocol.grid_faces, protocol.num_faces)).save(
            out_dir / f"grid_{name}.png"
        )
        log.info(
            "%s: success %.2f, |age error| %.1f, similarity %.2f",
            name,
            summary["success_rate"],
            summary["age_error"],
            summary["similarity"],
        )
    faces = min(protocol.sheet_faces, protocol.num_faces)
    editors_sheet(results, targets, faces).save(out_dir / "editors.png")
    write_edits_csv(
        out_dir / "edits.csv",
        list(results.values()),
        seeds,
        env_cfg.identity.hard_bound,
        protocol.success_window_years,
    )
    write_table(
        rows,
        out_dir / "results",
        title=cfg.get("title") or "Editors on held-out faces",
        note=protocol_note(protocol, env_cfg.max_steps, env_cfg.identity.hard_bound),
    )
    return rows
