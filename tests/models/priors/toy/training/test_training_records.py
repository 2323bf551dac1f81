"""The shipped priors' training records (models/priors/toy/weights/*/training-config*.yaml) still
rebuild: each names its trainer by the class path it has now, its values fit that trainer's schema,
and the system and data module build from it."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from framework.config import instantiate
from models.priors.toy.scenes import HELD_OUT_SINGLE_PROMPTS
from systems.schemas import SCHEMAS

WEIGHTS = Path(__file__).resolve().parents[5] / "models" / "priors" / "toy" / "weights"
RECORDS = sorted(WEIGHTS.glob("*/training-config*.yaml"))
SCHEMA_OF_TARGET = {node._target_: node for node in SCHEMAS.values() if hasattr(node, "_target_")}


def test_every_shipped_prior_has_a_record():
    assert {p.parent.name for p in RECORDS} == {"toy-text-to-image", "toy-view-prior"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_record_rebuilds_its_system_and_data(record, tmp_path):
    cfg = OmegaConf.load(record)
    for key in ("system", "data"):
        target = cfg[key]._target_
        assert target in SCHEMA_OF_TARGET, f"{record.name}: {key}._target_ {target} names no schema in systems/schemas.py"
        get_class(target)  # the class path imports
    system_cfg = OmegaConf.merge(OmegaConf.structured(SCHEMA_OF_TARGET[cfg.system._target_]), cfg.system)
    data_cfg = OmegaConf.merge(OmegaConf.structured(SCHEMA_OF_TARGET[cfg.data._target_]), cfg.data)
    data_cfg.cache_path = str(tmp_path / "data.pt")
    instantiate(data_cfg)  # nothing heavy: the renders are made at setup
    system = instantiate(system_cfg, run_dir=str(tmp_path))
    assert type(system).__module__.startswith("models.priors.toy.training.")
    assert sum(p.numel() for p in system.trained_modules().parameters()) > 0


CHECK_PROMPTS = ("trained_prompts", "held_out_prompts", "trained_check_prompts", "held_out_check_prompts")


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_record_check_prompts_are_the_trainer_defaults(record):
    """The shipped priors were checked on the prompts the trainers still default to; the held-out
    ones are scenes.py's HELD_OUT_SINGLE_PROMPTS, in its order."""
    system = OmegaConf.load(record).system
    defaults = OmegaConf.structured(SCHEMA_OF_TARGET[system._target_])
    keys = [key for key in CHECK_PROMPTS if key in defaults]
    assert len(keys) == 2
    for key in keys:
        assert list(system[key]) == list(defaults[key]), f"{record.name}: system.{key}"
        if key.startswith("held_out"):
            assert list(system[key]) == list(HELD_OUT_SINGLE_PROMPTS)
