"""Extensions without forking: a user's own package adds components (a material, a guidance, a whole
method), each with its YAML option, its `_target_` class and its schema, without editing this project.

The package holds its YAML under a `configs/` folder laid out like this project's (`configs/system/
material/glossy.yaml`, extending `/schema/material/glossy`), and declares the schemas of those options in
its own `__init__.py`, in the form of systems/schemas.py:

    SCHEMAS = {"material/glossy": GlossyConfig}        # stored as schema/material/glossy

The user names its config folder on the command line, as Hydra's search path:

    python launch.py --config-name dreamfusion-toy system/material=glossy 'hydra.searchpath=[pkg://my_ext.configs]'

Before Hydra composes, launch.py reads that override (`searchpath_packages`), imports the package that
holds each `pkg://` folder (`my_ext` for `pkg://my_ext.configs`) and stores its SCHEMAS in Hydra's
ConfigStore next to this project's (`register_extensions`). Nothing is registered by importing a module:
the command line names the package, the package lists its schemas. From there an extension's keys are
checked like a built-in component's: Hydra refuses unknown keys and wrong types while composing, and
framework/value_checks.py runs the config's `__post_init__` rules and refuses keys no schema has.

A package that cannot be imported, one without SCHEMAS (an extension whose YAML only uses this project's
schemas declares `SCHEMAS = {}`), an entry that is not `"<group>/<name>": <dataclass>` and a name this
project or another extension already uses are each a ConfigError (exit 2). A `file://` search path needs
nothing from here: its YAML may extend this project's schemas, and new schemas need a package.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from hydra.core.config_store import ConfigStore

from framework.config import ConfigError

SEARCHPATH_KEY = "hydra.searchpath"


def searchpath_entries(argv: list[str]) -> list[str]:
    """The entries of the command line's `hydra.searchpath=[...]` (also with `+` / `++`), parsed as Hydra does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    found: list[str] = []
    for arg in argv:
        if not arg.lstrip("+").startswith(SEARCHPATH_KEY + "="):
            continue
        try:
            value = OverridesParser.create().parse_overrides([arg])[0].value()
        except HydraException:
            continue  # Hydra reports a malformed override itself while composing
        found += [str(v) for v in (value if isinstance(value, list) else [value])]
    return found


def package_of(entry: str) -> str | None:
    """The package that declares a `pkg://` search path's schemas: the one holding its config folder
    (`pkg://my_ext.configs` -> my_ext; `pkg://my_ext` -> my_ext). None for other schemes (`file://`)."""
    if not entry.startswith("pkg://"):
        return None
    path = entry.removeprefix("pkg://").replace("/", ".").strip(".")
    parent, _, _ = path.rpartition(".")
    return parent or path


def searchpath_packages(argv: list[str]) -> list[str]:
    """The packages named by the command line's `pkg://` search paths, in order, each once."""
    packages = [p for p in map(package_of, searchpath_entries(argv)) if p]
    return list(dict.fromkeys(packages))


def declared_schemas(package: str) -> dict[str, type]:
    """`package`'s SCHEMAS, imported and checked: {"<group>/<name>": dataclass}."""
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ConfigError(
            f"{SEARCHPATH_KEY} names pkg://{package}..., but the package {package} cannot be imported ({error}). "
            f"Install it (pip install -e <its folder>) or put the folder that holds {package}/ on PYTHONPATH."
        ) from error
    schemas = getattr(module, "SCHEMAS", None)
    if schemas is None:
        raise ConfigError(
            f"the extension package {package} ({getattr(module, '__file__', '?')}) declares no SCHEMAS. List the schemas of "
            f'its configs in {package}/__init__.py as SCHEMAS = {{"<group>/<name>": <Config dataclass>}} '
            "(SCHEMAS = {} when its YAML only extends this project's schemas)."
        )
    if not isinstance(schemas, Mapping):
        raise ConfigError(f"{package}.SCHEMAS must be a dict {{\"<group>/<name>\": <Config dataclass>}}, not {type(schemas).__name__}")
    for path, node in schemas.items():
        if not isinstance(path, str) or "/" not in path.strip("/"):
            raise ConfigError(f"{package}.SCHEMAS key {path!r} must be '<group>/<name>', e.g. 'material/glossy'")
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            raise ConfigError(f"{package}.SCHEMAS[{path!r}] must be a dataclass (the option's typed config), not {node!r}")
    return {path.strip("/"): node for path, node in schemas.items()}


def store_schemas(schemas: Mapping[str, type]) -> None:
    """Each `"<group>/<name>": dataclass` into Hydra's ConfigStore as schema/<group>/<name>."""
    store = ConfigStore.instance()
    for path, node in schemas.items():
        group, _, name = f"schema/{path}".rpartition("/")
        store.store(group=group, name=name, node=node)


def register_extensions(argv: list[str], builtin: Mapping[str, type]) -> dict[str, str]:
    """Store the schemas of every package the command line's `pkg://` search paths name (module docstring).
    `builtin`: this project's schemas (systems/schemas.py), which an extension may not replace.
    -> {"<group>/<name>": the package that declared it}."""
    owner: dict[str, str] = {}
    for package in searchpath_packages(argv):
        schemas = declared_schemas(package)
        for path in schemas:
            if path in builtin:
                raise ConfigError(f"{package}.SCHEMAS declares {path!r}, which is already this project's schema; "
                                  f"give the extension's option its own name (e.g. '{path}-{package}')")
            if path in owner:
                raise ConfigError(f"{package}.SCHEMAS declares {path!r}, which {owner[path]} declares too; rename one")
            owner[path] = package
        store_schemas(schemas)
    return owner
