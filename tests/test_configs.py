"""Every method config composes, type-checks and instantiates; part swaps work; typos are caught."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

import launch  # noqa: F401  (registers the schemas and resolvers, as launch.py does)
from framework.config import instantiate, missing_keys
from framework.interfaces import Background, Geometry, Guidance, Material, PromptProcessor, Renderer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "base" and not p.stem.startswith("train-"))
PRIOR_TRAININGS = sorted(p.stem for p in CONFIGS.glob("train-*.yaml"))
TOY_METHODS = [m for m in METHODS if m.endswith(("-toy", "-toy-unet", "-toy-exact"))]
IMAGE_METHODS = [m for m in METHODS if "zero123" in m]  # image-to-3D: a picture, no prompt
SMALL = ["system.guidance.prior.n_exemplars=16", "system.guidance.prior.supersample=1"]


def compose_method(name: str, overrides: list[str] = ()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=False)


def test_there_are_method_configs():
    assert "dreamfusion-toy" in METHODS
    assert {"dreamfusion-toy", "dreamfusion-toy-unet", "magic3d-coarse-toy", "sjc-toy"} <= set(TOY_METHODS)


# Methods guided by real priors instantiate with the tiny random pipelines (tests/conftest.py) in place
# of the weights, which can't be downloaded here; their prompt has no default (threestudio's `???`).
TINY_PIPELINES = {
    "models.priors.stable_diffusion.StableDiffusionPrior": "tiny_sd_dir",
    "models.priors.deepfloyd_if.DeepFloydIFPrior": "tiny_if_dir",
    "models.priors.zero123.Zero123Prior": "tiny_zero123_dir",
}


@pytest.mark.parametrize("method", METHODS)
def test_method_composes_and_instantiates(method, tmp_path, request):
    cfg = compose_method(method)
    overrides = []
    # A later stage requires the earlier stage's checkpoint (null: start without it).
    if "system.geometry_convert_from" in missing_keys(cfg):
        overrides.append("system.geometry_convert_from=null")
    image = method in IMAGE_METHODS
    if image:
        assert "data.image_path" in missing_keys(cfg)  # threestudio's habit: no default picture
        overrides.append(f"data.image_path={request.getfixturevalue('toy_picture')}")
    prior = OmegaConf.select(cfg, "system.guidance.prior._target_")
    if prior in TINY_PIPELINES:
        assert set(missing_keys(cfg)) <= {"system.prompt", "system.geometry_convert_from", "data.image_path"}
        fixture = "tiny_stable_zero123_dir" if method == "stable-zero123" else TINY_PIPELINES[prior]
        tiny = request.getfixturevalue(fixture)
        overrides.append(f"system.guidance.prior.pretrained_model_name_or_path={tiny}")
        if not image:
            overrides += ["system.prompt=a red cube", f"system.prompt_processor.cache_dir={tmp_path / 'text-cache'}"]
        if OmegaConf.select(cfg, "system.guidance.lora_model_name_or_path"):  # VSD's second model
            overrides.append(f"system.guidance.lora_model_name_or_path={tiny}")
    cfg = compose_method(method, overrides)
    assert missing_keys(cfg) == [], f"{method} leaves required values unset"
    for key in ("data.image_path" if image else "system.prompt", "trainer.max_steps", "seed"):
        assert OmegaConf.select(cfg, key) is not None, f"{method} lacks the common key {key}"
    data = instantiate(cfg.data)
    assert data.train_dataset.sample()["rays_o"].shape[-1] == 3
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    assert isinstance(system.geometry, Geometry) and isinstance(system.material, Material)
    assert isinstance(system.background, Background) and isinstance(system.renderer, Renderer)
    assert isinstance(system.guidance, Guidance)
    assert image or isinstance(system.prompt_processor, PromptProcessor)


@pytest.mark.parametrize("config", PRIOR_TRAININGS)
def test_prior_training_config_composes_and_instantiates(config, tmp_path):
    """The configs that train the shipped toy priors (launch.py --config-name train-...)."""
    cfg = compose_method(config, [f"data.cache_path={tmp_path / 'data.pt'}"])
    assert missing_keys(cfg) == [], f"{config} leaves required values unset"
    assert cfg.trainer.max_steps > 0 and cfg.checkpoint.every_n_train_steps > 0
    instantiate(cfg.data)  # builds nothing heavy: the renders are made (or loaded) at setup
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    assert sum(p.numel() for p in system.trained_modules().parameters()) > 0


@pytest.mark.parametrize(
    "swap",
    ["system/background=neural-environment-map", "system/material=no-material", "system/material=diffuse-with-point-light"],
)
def test_part_swaps_instantiate(swap, tmp_path):
    cfg = compose_method("dreamfusion-toy", [swap])
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    option = swap.split("=")[1]
    part = system.background if "background" in swap else system.material
    assert type(part).__name__ == {
        "neural-environment-map": "NeuralEnvironmentMapBackground",
        "no-material": "NoMaterial",
        "diffuse-with-point-light": "DiffuseWithPointLight",
    }[option]


def test_unknown_key_and_wrong_type_fail_while_composing():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_method("dreamfusion-toy", ["system.geometry.radiuss=1"])
    with pytest.raises((ConfigCompositionException, ValidationError)):
        # (batch_size, like height and width, is `Any` so it may be a scheduled list: the data checks it)
        compose_method("dreamfusion-toy", ["data.eval_height=two"])
    with pytest.raises(ConfigCompositionException, match="implicit-volume"):
        compose_method("dreamfusion-toy", ["system/geometry=implicit-volum"])


def test_prompt_reaches_every_part():
    cfg = compose_method("dreamfusion-toy", ["system.prompt=a blue torus"])
    assert cfg.system.prompt_processor.prompt == "a blue torus"
    assert cfg.system.guidance.prior.prompt == "a blue torus"
    assert cfg.system.evaluator.scene == "a blue torus"
    assert cfg.tag == "a_blue_torus"
    # the toy prior draws its exemplar cameras from the training camera ranges
    assert list(cfg.system.guidance.prior.elevation_range) == list(cfg.data.elevation_range)


@pytest.mark.parametrize("method", TOY_METHODS)
def test_toy_methods_use_the_toy_presets(method):
    """Every toy method takes its cameras from data/random-camera-toy and its world's parts from
    preset/toy-world, rather than a copy of them."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        choices = compose(config_name=method, return_hydra_config=True).hydra.runtime.choices
    if method in IMAGE_METHODS:  # one picture at a toy camera, random views at the toy view prior's cameras
        assert choices["data"] == "single-image", f"{method} does not use data: single-image"
    else:
        assert choices["data"] == "random-camera-toy", f"{method} does not use data: random-camera-toy"
    assert choices.get("preset") == "toy-world", f"{method} does not use preset: toy-world"
    parts = {"system/background": "solid-color", "system/material": "toy-shading", "system/evaluator": "toy"}
    assert {group: choices[group] for group in parts} == parts


def test_toy_world_preset_yields_to_the_command_line_and_lists_its_options():
    cfg = compose_method("dreamfusion-toy", ["system/background=neural-environment-map"])
    assert cfg.system.background._target_.endswith("NeuralEnvironmentMapBackground")
    with pytest.raises(ConfigCompositionException, match="toy-world"):
        compose_method("dreamfusion-toy", ["preset=toy-wrld"])
