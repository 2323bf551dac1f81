"""framework.interfaces.RunnableSystem: every system class the schemas name fills the runner's contract."""
from __future__ import annotations

import inspect
import typing

import pytest
import pytorch_lightning as pl
from hydra.utils import get_class

from framework.base_system import BaseSystem
from framework.interfaces import RunnableSystem
from models.priors.toy.training.prior_training import PriorTrainingSystem
from systems.schemas import SCHEMAS

SYSTEMS = {path: get_class(node._target_) for path, node in SCHEMAS.items() if path.startswith("system/")}
CONTRACT = sorted(name for name, value in vars(RunnableSystem).items() if callable(value) and not name.startswith("_"))


def test_the_contract_names_only_what_a_lightning_module_lacks():
    assert CONTRACT == ["export", "initialise_for_training"]
    assert not [name for name in CONTRACT if hasattr(pl.LightningModule, name)]


def test_the_schemas_name_both_families():
    """The methods and the toy-prior trainers: the parametrised check below covers each."""
    assert any(issubclass(cls, BaseSystem) for cls in SYSTEMS.values())
    assert any(issubclass(cls, PriorTrainingSystem) for cls in SYSTEMS.values())


def call_with(signature: inspect.Signature, parameters: list[inspect.Parameter]) -> None:
    """Bind placeholder arguments for `parameters` (self first) to `signature`; TypeError if it can't take them."""
    args, kwargs = [], {}
    for p in parameters:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(object())
        elif p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = object()
    signature.bind(*args, **kwargs)


@pytest.mark.parametrize("schema", sorted(SYSTEMS))
def test_system_fills_the_runner_contract(schema):
    cls = SYSTEMS[schema]
    assert issubclass(cls, pl.LightningModule), f"{cls.__qualname__} is not a LightningModule"
    for name in CONTRACT:
        assert callable(getattr(cls, name, None)), f"{cls.__qualname__} lacks {name}() (framework/interfaces.py RunnableSystem)"
        wanted, given = getattr(RunnableSystem, name), getattr(cls, name)
        try:
            call_with(inspect.signature(given), list(inspect.signature(wanted).parameters.values()))
        except TypeError as error:
            pytest.fail(f"{cls.__qualname__}.{name}{inspect.signature(given)} can't be called as {name}{inspect.signature(wanted)}: {error}")
        assert typing.get_type_hints(given).get("return") == typing.get_type_hints(wanted)["return"], (
            f"{cls.__qualname__}.{name} returns {typing.get_type_hints(given).get('return')}, "
            f"the contract says {typing.get_type_hints(wanted)['return']}"
        )
    try:  # the runner builds it as Target(cfg, run_dir=...) (framework.config.instantiate)
        inspect.signature(cls).bind(object(), run_dir="outputs/run")
    except TypeError as error:
        pytest.fail(f"{cls.__qualname__}{inspect.signature(cls)} can't be built as {cls.__qualname__}(cfg, run_dir=...): {error}")
