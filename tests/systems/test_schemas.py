"""The schema list and the convention that replaces a registry: each `_target_` class has its
`<Class>Config` beside it, so a stored plain config is typed again from the `_target_` alone."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from framework.config import ConfigError, config_class_of, typed_config
from systems.schemas import SCHEMAS

TARGETED = {path: schema for path, schema in SCHEMAS.items() if hasattr(schema, "_target_")}


def test_every_schema_but_the_run_names_its_class():
    assert set(SCHEMAS) - set(TARGETED) == {"run"}


@pytest.mark.parametrize("path", sorted(TARGETED))
def test_the_config_beside_the_target_is_the_schema(path):
    schema = TARGETED[path]
    assert config_class_of(schema._target_) is schema


def test_typed_config_rejects_what_the_schema_would():
    node = OmegaConf.create({"_target_": "models.guidance.sds.SDSGuidance", "guidance_scale": 7.5})
    typed = typed_config(node)
    assert typed.guidance_scale == 7.5 and typed.weighting == "sds"  # the schema's default filled in
    with pytest.raises(ConfigKeyError):
        typed_config(OmegaConf.create({"_target_": "models.guidance.sds.SDSGuidance", "guidance_sacle": 7.5}))


def test_a_class_without_a_config_beside_it_is_named():
    with pytest.raises(ConfigError, match="ConfigError' has no config dataclass ConfigErrorConfig"):
        config_class_of("framework.config.ConfigError")
