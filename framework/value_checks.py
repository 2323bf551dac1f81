"""Value rules of config fields, and the walk that checks a whole run config before training.

Hydra checks keys and types while composing; these rules check what types cannot: ranges
(a positive size, a step count of at least 1), finiteness, and the allowed words of a string
field. A config states its rules once, in its `__post_init__`, beside its fields:

    @dataclass
    class TrainerConfig:
        max_steps: int = 10000
        val_check_interval: int = 200

        def __post_init__(self) -> None:
            check_fields(self, max_steps=at_least(1), val_check_interval=at_least(1))

OmegaConf calls `__post_init__` when it builds the dataclass (`OmegaConf.to_object`), so the same
rule runs for a run's config (`check_config_values`, before anything heavy is built) and for a
config made in Python. The walk adds the dotted key to the message:
`trainer.max_steps=-5: must be an integer >= 1`.

Every float anywhere in a run config (schedule points included) must be finite: that rule is
the walk's, so no config repeats it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from framework.config import ConfigError
from framework.schedule import Schedule


class FieldValueError(ConfigError):
    """A field's value breaks its rule; `key` grows to the full dotted name as the walk unwinds."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"{self.key}={self.value!r} is not allowed: {self.allowed}. Set it on the command line, e.g. {self.key}=<value>"

    def under(self, prefix: str) -> "FieldValueError":
        return FieldValueError(f"{prefix}{self.key}", self.value, self.allowed)


@dataclass(frozen=True)
class Rule:
    """What a value must be (`allowed`, read by a person) and the test of it."""

    allowed: str
    test: Callable[[Any], bool]

    def allows(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer_word(bound: float) -> str:
    return "an integer" if float(bound).is_integer() else "a number"


def at_least(bound: float) -> Rule:
    return Rule(f"must be {_integer_word(bound)} >= {bound}", lambda v: _is_number(v) and v >= bound)


def greater_than(bound: float) -> Rule:
    return Rule(f"must be a number > {bound}", lambda v: _is_number(v) and v > bound)


def between(low: float, high: float) -> Rule:
    """low <= value <= high."""
    return Rule(f"must be a number in [{low}, {high}]", lambda v: _is_number(v) and low <= v <= high)


def one_of(*words: Any) -> Rule:
    return Rule(f"must be one of {', '.join(map(repr, words))}", lambda v: v in words)


def either(*rules: Rule) -> Rule:
    words = " or ".join(r.allowed.removeprefix("must be ") for r in rules)
    return Rule(f"must be {words}", lambda v: any(r.allows(v) for r in rules))


def optional(rule: Rule) -> Rule:
    """None (off / automatic) or what `rule` allows."""
    return Rule(f"{rule.allowed} (or null)", lambda v: v is None or rule.allows(v))


def each(rule: Rule) -> Rule:
    """A value or a list of values (e.g. sizes scheduled by resolution milestones), each allowed by `rule`."""

    def test(value: Any) -> bool:
        values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        return len(values) > 0 and all(rule.allows(v) for v in values)

    return Rule(f"{rule.allowed} (or a list of such)", test)


def increasing_pair(rule: Rule) -> Rule:
    """A [low, high] range with low <= high, each allowed by `rule` (elevation, distance, fov ranges)."""

    def test(value: Any) -> bool:
        values = list(value)
        return len(values) == 2 and all(rule.allows(v) for v in values) and values[0] <= values[1]

    return Rule(f"must be [low, high] with low <= high, each {rule.allowed.removeprefix('must be ')}", test)


def schedule_of(rule: Rule) -> Rule:
    """A Schedule spec (a number, [[step, value], ...] or {mode, points}) whose every value `rule` allows."""

    def test(spec: Any) -> bool:
        return all(rule.allows(v) for v in Schedule.parse(spec).values)

    return Rule(f"{rule.allowed} at every step (a number or a schedule)", test)


def _unset(value: Any) -> bool:
    """A required value not set (`???`): check_missing names it, the rules skip it."""
    return isinstance(value, str) and value == "???"


def check_fields(config: Any, **rules: Rule) -> None:
    """Raise FieldValueError for the first field of `config` its rule does not allow."""
    for name, rule in rules.items():
        value = getattr(config, name)
        if _unset(value):
            continue
        if not rule.allows(value):
            raise FieldValueError(name, value, rule.allowed)


# ----------------------------------------------------------------------------------------------
# The walk over a composed run config.


def check_config_values(cfg: DictConfig) -> None:
    """Every rule of every typed node, deepest first, each error naming its full dotted key."""
    check_unknown_keys(cfg)
    _check_finite(OmegaConf.to_container(cfg, resolve=True), "")
    _check_node(cfg, "")


def _check_node(node: DictConfig, prefix: str) -> None:
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            _check_node(child, f"{prefix}{key}.")
    schema = OmegaConf.get_type(node)
    if schema is not None and dataclasses.is_dataclass(schema) and hasattr(schema, "__post_init__"):
        try:
            OmegaConf.to_object(node)
        except FieldValueError as error:
            raise error.under(prefix) from None


def _check_finite(value: Any, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldValueError(key.rstrip("."), value, "must be a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{key}{k}.")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            _check_finite(v, f"{key.rstrip('.')}[{i}].")


def unknown_key_message(key: str, schema: type) -> str:
    """`key` (dotted, from the root) is no field of the dataclass `schema`: the message, with the closest field.
    Also launch.py's, for the unknown keys Hydra finds while composing."""
    fields = sorted(f.name for f in dataclasses.fields(schema))
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, fields, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return f"{key} is not a key of {schema.__name__}: {hint}Its keys are {', '.join(fields)}."


def check_unknown_keys(cfg: DictConfig, prefix: str = "") -> None:
    """A key no schema has (`+system.promt=...` gets past Hydra's own check) is an error like a misspelt one."""
    schema = OmegaConf.get_type(cfg)
    known = {f.name for f in dataclasses.fields(schema)} if schema and dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if known is not None and key not in known:
            raise ConfigError(unknown_key_message(f"{prefix}{key}", schema)
                              + " Remove the override (a leading '+' does not make an unknown key work).")
        if not OmegaConf.is_missing(cfg, key) and not OmegaConf.is_interpolation(cfg, key):
            child = cfg._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none():
                check_unknown_keys(child, f"{prefix}{key}.")


# ----------------------------------------------------------------------------------------------
# More rules, and the checks of a field against another (a range given as two fields) or of every
# entry of a mapping field. check_order and check_entries raise FieldValueError like check_fields,
# so the walk names their keys in full too.


def number() -> Rule:
    """Any number (a colour component, an azimuth): the walk already refuses a non-finite one."""
    return Rule("must be a number", _is_number)


def number_at_least(bound: float) -> Rule:
    """value >= bound for a float field (`at_least` words a whole bound as an integer's)."""
    return Rule(f"must be a number >= {bound}", lambda v: _is_number(v) and v >= bound)


def inside(low: float, high: float, *, include_low: bool = False, include_high: bool = False) -> Rule:
    """low < value < high, an end included when asked: a field of view in (0, 180), a fraction in (0, 1]."""

    def test(v: Any) -> bool:
        above = v >= low if include_low else v > low
        below = v <= high if include_high else v < high
        return _is_number(v) and above and below

    interval = f"{'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
    return Rule(f"must be a number in {interval}", test)


def list_of(rule: Rule, *, length: int | None = None, min_length: int = 0, ascending: bool = False) -> Rule:
    """A list whose every entry `rule` allows: of exactly `length` entries, or at least `min_length`;
    with `ascending`, in non-decreasing order (resolution milestones)."""
    size = f"{length} " if length is not None else ("" if min_length == 0 else f"at least {min_length} ")
    order = " in non-decreasing order" if ascending else ""

    def test(value: Any) -> bool:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence | ListConfig):
            return False
        values = list(value)
        if (length is not None and len(values) != length) or len(values) < min_length:
            return False
        if ascending and any(b < a for a, b in zip(values, values[1:])):
            return False
        return all(rule.allows(v) for v in values)

    return Rule(f"must be a list of {size}values{order}, each {rule.allowed.removeprefix('must be ')}", test)


def tuple_of(*rules: Rule) -> Rule:
    """A list of len(rules) entries, entry i allowed by rules[i] (a camera as [elevation, azimuth, distance])."""

    def test(value: Any) -> bool:
        values = list(value)
        return len(values) == len(rules) and all(r.allows(v) for r, v in zip(rules, values))

    parts = ", ".join(r.allowed.removeprefix("must be ") for r in rules)
    return Rule(f"must be [{parts}]", test)


def check_entries(config: Any, name: str, rule: Rule) -> None:
    """Every value of the mapping field `name` allowed by `rule`; a FieldValueError names `name.<key>`."""
    entries = getattr(config, name)
    if _unset(entries):
        return
    for key, value in (entries or {}).items():
        if not rule.allows(value):
            raise FieldValueError(f"{name}.{key}", value, rule.allowed)


def check_order(config: Any, low: str, high: str, *, strict: bool = False) -> None:
    """The fields `low` and `high` form a range: low <= high (low < high when `strict`). Numbers, or
    Schedules compared at every step (at each of their points and just before it, which covers the
    piecewise-linear and the step-wise modes). A field that is None or not set is not compared; call
    it after check_fields, which has checked each value on its own."""
    a, b = getattr(config, low), getattr(config, high)
    if any(v is None or _unset(v) for v in (a, b)):
        return
    first, second = Schedule.parse(a, low), Schedule.parse(b, high)
    points = sorted({p for s in first.steps + second.steps for p in (s, math.nextafter(s, -math.inf))})
    if all(first(p) < second(p) if strict else first(p) <= second(p) for p in points):
        return
    relation = "<" if strict else "<="
    when = " at every step" if len(points) > 2 else ""
    raise FieldValueError(low, a, f"must be {relation} {high} ({b!r}){when}")
