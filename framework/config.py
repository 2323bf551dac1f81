"""Typed component configs and how components are built from them.

Every component has a config dataclass just above its class, with a `_target_` naming the
class. The dataclass is stored in Hydra's ConfigStore as `schema/<group>/<name>`
(`systems/schemas.py` lists them all) and each YAML option extends its schema, so Hydra checks
keys and types while composing, before anything heavy runs:

    # configs/system/geometry/implicit-volume.yaml
    defaults:
      - /schema/geometry/implicit-volume@_here_
      - _self_
    radius: 1.0

Runtime wiring is by arguments: `instantiate(cfg.renderer, geometry=g, material=m, background=b)`
calls `Renderer(cfg, geometry=g, material=m, background=b)` with `cfg` the typed dataclass.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from framework.errors import ConfigError, UserError  # noqa: F401  (re-exported: most modules import them from here)


def to_dataclass(node: Any) -> Any:
    """A config node -> its typed dataclass (a dataclass passes through)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return node
    if isinstance(node, DictConfig):
        if OmegaConf.get_type(node) in (dict, None):
            return node  # untyped: the class reads it as a DictConfig
        return OmegaConf.to_object(node)
    raise ConfigError(f"expected a config node with a _target_, got {type(node).__name__}: {node!r}")


def instantiate(node: Any, **runtime: Any) -> Any:
    """Build the component a config node names: `Target(cfg, **runtime)`."""
    if node is None:
        return None
    target = node._target_ if hasattr(node, "_target_") else None
    if not target:
        raise ConfigError(f"config node has no _target_: {node!r}")
    cls = get_class(target)
    return cls(to_dataclass(node), **runtime)


def config_class_of(target: str) -> type:
    """The typed config of the class `target` names: the `<Class>Config` dataclass beside it (the
    convention every component follows; a Lightning `<Name>DataModule` has `<Name>DataConfig`), so a
    stored plain config (a checkpoint's run, a training record) is typed again without a registry."""
    cls = get_class(target)
    stem = cls.__name__.removesuffix("Module") if cls.__name__.endswith("DataModule") else cls.__name__
    name = f"{stem}Config"
    schema = getattr(sys.modules[cls.__module__], name, None)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise ConfigError(f"{target!r} has no config dataclass {name} beside it in {cls.__module__}")
    return schema


def typed_config(node: Any) -> DictConfig:
    """A plain (untyped) config node with a `_target_` -> the same values on its class's schema,
    so unknown keys and wrong types fail as they do at composition."""
    return OmegaConf.merge(OmegaConf.structured(config_class_of(node._target_)), node)


def missing_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted names of every required (`???`) value not set.

    Walks the tree without resolving interpolations, so `tag: ${slug:${system.prompt}}` does not
    hide the missing `system.prompt` behind an interpolation error.
    """
    found: list[str] = []
    if isinstance(cfg, DictConfig):
        items = [(str(k), k) for k in cfg.keys()]
    elif isinstance(cfg, ListConfig):
        items = [(str(i), i) for i in range(len(cfg))]
    else:
        return found
    for name, key in items:
        path = f"{prefix}{name}"
        if OmegaConf.is_missing(cfg, key):
            found.append(path)
        elif not OmegaConf.is_interpolation(cfg, key):
            found.extend(missing_keys(cfg._get_node(key), path + "."))
    return sorted(found)


def check_missing(cfg: DictConfig) -> None:
    missing = missing_keys(cfg)
    if missing:
        names = ", ".join(missing)
        example = " ".join(f'{k}=...' for k in missing)
        raise ConfigError(f"required config values are not set: {names}. Set them on the command line, e.g. {example}")
