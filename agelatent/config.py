"""Where the configuration lives and how code reads it.

The Hydra YAML groups under the repository's ``conf/`` are the only source of defaults. The config
dataclasses in the package (``LatentAgeEnvConfig``, ``SACConfig``, ...) are schemas without defaults: they
check types and ranges, and :func:`from_mapping` builds them from a composed config, refusing both a
missing and an unknown key. A setting therefore has exactly one home, and a test object built from
:func:`compose_config` is the object ``make train`` trains.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_DIR", "compose_config", "from_mapping", "to_dict"]

#: Hydra config root (the repository's top-level ``conf/``).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

T = TypeVar("T")


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config a console script would run with (``conf/<name>.yaml`` + Hydra overrides), for notebooks and
    tests. ``hydra.*`` keys are left out and ``${now:...}`` stays unresolved until read."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        return compose(name, overrides=list(overrides))


def to_dict(node: Any) -> dict[str, Any]:
    """A plain, resolved ``dict`` of a config node (a ``DictConfig`` or any mapping)."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build the config dataclass ``cls`` from ``data``: every field must be given and no other key.

    ``where`` is the config path the mapping came from (``"env"``, ``"agent"``): errors name the keys there.
    Nested dataclass fields are built recursively from nested mappings.
    """
    data = to_dict(data)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    missing = sorted(set(fields) - set(data))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown}; known keys are {sorted(fields)} (check the spelling, or the "
            f"config group that sets {where})"
        )
    if missing:
        raise ValueError(
            f"{where}: missing key(s) {missing}; every setting has its default in conf/ — compose the config "
            "with agelatent.config.compose_config rather than writing it by hand"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and not isinstance(value, kind):
            value = from_mapping(kind, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
