"""Value rules of config fields (framework/value_checks.py): the rule helpers, the rules every config
states in its `__post_init__`, and the walk that reports a bad value with its full dotted key.

Composing is ~0.2 s a config and nothing is instantiated, so the file runs in seconds."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from framework.config import ConfigError, missing_keys
from framework.runner import check_run_config
from framework.value_checks import (
    FieldValueError,
    at_least,
    between,
    check_config_values,
    check_entries,
    check_fields,
    check_order,
    each,
    either,
    greater_than,
    increasing_pair,
    inside,
    list_of,
    number,
    number_at_least,
    one_of,
    optional,
    schedule_of,
    tuple_of,
)
from tests.test_configs import METHODS, PRIOR_TRAININGS, compose_method


def allowed_and_refused(rule, good, bad):
    assert [v for v in good if not rule.allows(v)] == [], rule.allowed
    assert [v for v in bad if rule.allows(v)] == [], rule.allowed


# ---------------------------------------------------------------------------------------------
# (a) the rule helpers


def test_bounds():
    allowed_and_refused(at_least(1), [1, 2, 10**9, 1.5], [0, -5, True, "3", None, [1]])
    allowed_and_refused(greater_than(0), [1e-9, 3, 2.5], [0, -1, 0.0, False, "1"])
    allowed_and_refused(between(0, 1), [0, 1, 0.5, 0.0], [-1e-9, 1.0001, None])
    allowed_and_refused(number(), [0, -3.5, 1e30], [True, "1", None, [1.0], float("nan"), float("inf")])
    allowed_and_refused(number_at_least(0), [0, 0.0, 0.1], [-0.1, True])
    assert at_least(1).allowed == "must be an integer >= 1"
    assert at_least(0.5).allowed == "must be a number >= 0.5"
    assert greater_than(0).allowed == "must be a number > 0"
    assert between(0, 1).allowed == "must be a number in [0, 1]"
    assert number_at_least(0).allowed == "must be a number >= 0"  # a float field: not "an integer"


def test_inside_includes_only_the_ends_asked_for():
    allowed_and_refused(inside(0, 180), [1e-6, 90, 179.9], [0, 180, -1, 181])
    allowed_and_refused(inside(0, 1, include_high=True), [1, 0.5], [0, 1.01])
    allowed_and_refused(inside(0, 1, include_low=True), [0, 0.5], [1])
    assert inside(0, 180).allowed == "must be a number in (0, 180)"
    assert inside(0, 1, include_high=True).allowed == "must be a number in (0, 1]"


def test_words_and_combinations():
    allowed_and_refused(one_of("auto", "cpu"), ["auto", "cpu"], ["Auto", "gpu", None, 1])
    assert one_of("auto", -1).allowed == "must be one of 'auto', -1"
    threshold = either(one_of("auto"), greater_than(0))
    allowed_and_refused(threshold, ["auto", 25.0, 3], ["abc", 0, -1, None])
    assert threshold.allowed == "must be one of 'auto' or a number > 0"
    size = optional(at_least(1))
    allowed_and_refused(size, [None, 1, 4096], [0, "x"])
    assert size.allowed == "must be an integer >= 1 (or null)"


def test_each_value_or_list_of_values():
    rule = each(at_least(1))
    allowed_and_refused(rule, [1, 64, [64, 128], (2, 3), OmegaConf.create([8, 16])], [0, [64, 0], [], "two", None])
    assert rule.allowed == "must be an integer >= 1 (or a list of such)"


def test_increasing_pair():
    rule = increasing_pair(between(-90, 90))
    allowed_and_refused(rule, [[-10, 90], [15, 15], (0.0, 1.0)], [[60, -10], [-100, 0], [0], [0, 1, 2], "ab"])
    assert rule.allowed == "must be [low, high] with low <= high, each a number in [-90, 90]"


def test_list_of_and_tuple_of():
    milestones = list_of(at_least(0), ascending=True)
    allowed_and_refused(milestones, [[], [0], [100, 200], [5, 5]], [[200, 100], [-1], 3, "ab", {"a": 1}])
    assert milestones.allowed == "must be a list of values in non-decreasing order, each an integer >= 0"
    triple = list_of(at_least(2), length=3)
    allowed_and_refused(triple, [[2, 2, 2], [100, 100, 100]], [[4, 4], [4, 4, 1], [4, 4, 4, 4]])
    assert triple.allowed == "must be a list of 3 values, each an integer >= 2"
    some = list_of(number(), min_length=1)
    allowed_and_refused(some, [[1.0], [0, 1, 2, 3]], [[], ["a"]])
    camera = tuple_of(between(-90, 90), number(), greater_than(0))
    allowed_and_refused(camera, [[20.0, 0.0, 1.6], (0, -180, 1)], [[20.0, 0.0], [100, 0, 1], [0, 0, 0]])
    assert camera.allowed == "must be [a number in [-90, 90], a number, a number > 0]"


def test_schedule_of_checks_every_value_of_a_schedule():
    rule = schedule_of(between(0, 1))
    good = [0.5, [[0, 0.98], [500, 0.5]], {"mode": "step", "points": [[0, 0.9], [100, 0.1]]}]
    allowed_and_refused(rule, good, [1.5, [[0, 0.98], [500, 1.5]], "high", True, {"points": []}, {"mode": "cubic", "points": [[0, 1]]}])
    assert rule.allowed == "must be a number in [0, 1] at every step (a number or a schedule)"


@dataclass
class Example:
    size: int = 4
    name: str = "auto"
    low: Any = 0.1
    high: Any = 0.9
    weights: dict = field(default_factory=lambda: {"lambda_a": 1.0, "lambda_b": None})
    path: Optional[str] = "???"


def test_check_fields_names_the_field_the_value_and_what_is_allowed():
    check_fields(Example(), size=at_least(1), name=one_of("auto"), path=one_of("never"))  # "???" is skipped
    with pytest.raises(FieldValueError) as info:
        check_fields(Example(size=0, name="x"), size=at_least(1), name=one_of("auto"))
    error = info.value
    assert (error.key, error.value, error.allowed) == ("size", 0, "must be an integer >= 1")  # the first bad field
    assert str(error) == "size=0 is not allowed: must be an integer >= 1. Set it on the command line, e.g. size=<value>"
    assert isinstance(error, ConfigError) and isinstance(error, ValueError)
    assert str(error.under("system.geometry.")).startswith("system.geometry.size=0 is not allowed")


def test_check_entries_names_the_entry():
    check_entries(Example(), "weights", optional(number_at_least(0)))
    with pytest.raises(FieldValueError, match=r"^weights.lambda_b=-1 is not allowed: must be a number >= 0"):
        check_entries(Example(weights={"lambda_a": 1, "lambda_b": -1}), "weights", number_at_least(0))


def test_check_order_compares_numbers_and_schedules_at_every_step():
    check_order(Example(), "low", "high")
    check_order(Example(low=0.5, high=0.5), "low", "high")
    check_order(Example(low=None), "low", "high")  # null: nothing to compare
    with pytest.raises(FieldValueError, match=r"^low=0.5 is not allowed: must be < high \(0.5\)\."):
        check_order(Example(low=0.5, high=0.5), "low", "high", strict=True)
    with pytest.raises(FieldValueError, match=r"^low=0.95 is not allowed: must be <= high \(0.9\)\."):
        check_order(Example(low=0.95), "low", "high")
    # the schedules cross between their points: at step 500 the upper end has fallen to 0.5
    falling = [[0, 0.98], [500, 0.5]]
    check_order(Example(low=0.4, high=falling), "low", "high")
    with pytest.raises(FieldValueError, match=r"must be <= high \(\[\[0, 0.98\], \[500, 0.5\]\]\) at every step"):
        check_order(Example(low=0.6, high=falling), "low", "high")
    # a step-wise upper end drops at its point; a linear lower end must stay below it just before the drop too
    step = {"mode": "step", "points": [[0, 0.9], [100, 0.3]]}
    check_order(Example(low=[[0, 0.2], [100, 0.3]], high=step), "low", "high")
    with pytest.raises(FieldValueError):
        check_order(Example(low=[[0, 0.2], [100, 0.35]], high=step), "low", "high")


def test_the_walk_names_nested_keys_and_refuses_non_finite_floats():
    cfg = compose_method("dreamfusion-toy", ["system.prompt=a red cube", "system.geometry.pos_encoding.n_levels=0"])
    with pytest.raises(FieldValueError, match=r"^system\.geometry\.pos_encoding\.n_levels=0 is not allowed"):
        check_config_values(cfg)
    cfg = compose_method("dreamfusion-toy", ["system.prompt=a red cube", "system.guidance.guidance_scale=[[0,10],[100,nan]]"])
    with pytest.raises(FieldValueError, match=r"system\.guidance\.guidance_scale\[1\]\[1\]=nan .*finite"):
        check_config_values(cfg)


def test_rules_run_for_a_config_made_in_python():
    from framework.data.random_camera import RandomCameraDataConfig
    from models.geometry.volume_grid import VolumeGridConfig

    with pytest.raises(FieldValueError, match=r"^elevation_range=\[60, -10\] is not allowed: must be \[low, high\]"):
        RandomCameraDataConfig(elevation_range=[60, -10])
    # a subclass narrows its parent's choice: a voxel grid has no analytic normals
    with pytest.raises(FieldValueError, match="normal_type='analytic' is not allowed: must be one of 'finite_difference', None"):
        VolumeGridConfig(normal_type="analytic")
    VolumeGridConfig(normal_type=None, grid_size=[2, 2, 2])


# ---------------------------------------------------------------------------------------------
# (b) bad values on the command line: an error naming the full dotted key and the value, before training

PROMPT = "system.prompt=a red cube"

BAD = [
    # (method, overrides, the start of the message)
    ("dreamfusion-toy", ["data.height=0"], "data.height=0 is not allowed: must be an integer >= 1"),
    ("dreamfusion-toy", ["data.width=-1"], "data.width=-1 is not allowed"),
    ("dreamfusion-toy", ["data.batch_size=0"], "data.batch_size=0 is not allowed"),
    ("dreamfusion-toy", ["data.n_test_views=0"], "data.n_test_views=0 is not allowed"),
    ("dreamfusion-toy", ["data.n_val_views=0"], "data.n_val_views=0 is not allowed"),
    ("dreamfusion-toy", ["data.eval_height=0"], "data.eval_height=0 is not allowed"),
    ("dreamfusion-toy", ["data.eval_width=-64"], "data.eval_width=-64 is not allowed"),
    ("dreamfusion-toy", ["data.elevation_range=[60,-10]"], "data.elevation_range=[60.0, -10.0] is not allowed: must be [low, high]"),
    ("dreamfusion-toy", ["data.elevation_range=[-10,120]"], "data.elevation_range=[-10.0, 120.0] is not allowed"),
    ("dreamfusion-toy", ["data.camera_distance_range=[0,1.5]"], "data.camera_distance_range=[0.0, 1.5] is not allowed"),
    ("dreamfusion-toy", ["data.fovy_range=[40,180]"], "data.fovy_range=[40.0, 180.0] is not allowed"),
    ("dreamfusion-toy", ["data.eval_fovy_deg=0"], "data.eval_fovy_deg=0.0 is not allowed: must be a number in (0, 180)"),
    ("dreamfusion-toy", ["data.camera_perturb=-0.1"], "data.camera_perturb=-0.1 is not allowed: must be a number >= 0"),
    ("dreamfusion-toy", ["data.light_sample_strategy=sun"], "data.light_sample_strategy='sun' is not allowed: must be one of"),
    ("dreamfusion-toy", ["system.geometry.isosurface_resolution=1"], "system.geometry.isosurface_resolution=1 is not allowed: must be an integer >= 2"),
    ("dreamfusion-toy", ["system.geometry.isosurface_threshold=abc"], "system.geometry.isosurface_threshold='abc' is not allowed: must be one of 'auto' or"),
    ("dreamfusion-toy", ["system.geometry.isosurface_threshold=-1"], "system.geometry.isosurface_threshold=-1 is not allowed"),
    ("dreamfusion-toy", ["system.geometry.radius=0"], "system.geometry.radius=0.0 is not allowed: must be a number > 0"),
    ("dreamfusion-toy", ["system.geometry.density_activation=relu"], "system.geometry.density_activation='relu' is not allowed"),
    ("dreamfusion-toy", ["system.geometry.density_bias=blob"], "system.geometry.density_bias='blob' is not allowed"),
    ("dreamfusion-toy", ["system.geometry.pos_encoding.n_levels=0"], "system.geometry.pos_encoding.n_levels=0 is not allowed"),
    ("dreamfusion-toy", ["system.geometry.pos_encoding.backend=cuda"], "system.geometry.pos_encoding.backend='cuda' is not allowed"),
    ("dreamfusion-toy", ["system.guidance.guidance_scale=-1"], "system.guidance.guidance_scale=-1 is not allowed: must be a number > 0 at every step"),
    ("dreamfusion-toy", ["system.guidance.min_step_percent=0.99"], "system.guidance.min_step_percent=0.99 is not allowed: must be <= max_step_percent (0.98)"),
    ("dreamfusion-toy", ["system.guidance.max_step_percent=1.5"], "system.guidance.max_step_percent=1.5 is not allowed: must be a number in [0, 1]"),
    ("dreamfusion-toy", ["system.guidance.weighting=linear"], "system.guidance.weighting='linear' is not allowed"),
    ("dreamfusion-toy", ["system.guidance.prior.k_nearest=-1"], "system.guidance.prior.k_nearest=-1 is not allowed"),
    ("dreamfusion-toy", ["system.guidance.prior.camera_angle=sideways"], "system.guidance.prior.camera_angle='sideways' is not allowed"),
    ("dreamfusion-toy", ["system.optimizer.lr=0"], "system.optimizer.lr=0.0 is not allowed: must be a number > 0"),
    ("dreamfusion-toy", ["system.optimizer.name=Adamm"], "system.optimizer.name='Adamm' is not allowed: must name an optimizer class"),
    ("dreamfusion-toy", ["system.loss.lambda_sds=-1"], "system.loss.lambda_sds=-1 is not allowed: must be a number >= 0 at every step"),
    ("dreamfusion-toy", ["system.renderer.num_samples_per_ray=0"], "system.renderer.num_samples_per_ray=0 is not allowed"),
    ("dreamfusion-toy", ["system.renderer.grad_chunk_rays=0"], "system.renderer.grad_chunk_rays=0 is not allowed: must be an integer >= 1 (or null)"),
    ("dreamfusion-toy", ["system.material.diffuse_prob=1.5"], "system.material.diffuse_prob=1.5 is not allowed: must be a number in [0, 1]"),
    ("dreamfusion-toy", ["system.export.texture_size=0"], "system.export.texture_size=0 is not allowed"),
    ("dreamfusion-toy", ["system.evaluator.grid_resolution=0"], "system.evaluator.grid_resolution=0 is not allowed"),
    ("dreamfusion-toy", ["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed: must be an integer >= 1"),
    ("dreamfusion-toy", ["trainer.max_steps=-5"], "trainer.max_steps=-5 is not allowed: must be an integer >= 1"),
    ("dreamfusion-toy", ["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is not allowed"),
    ("dreamfusion-toy", ["checkpoint.every_n_train_steps=0"], "checkpoint.every_n_train_steps=0 is not allowed"),
    ("sjc-toy", ["system.guidance.n_samples=0"], "system.guidance.n_samples=0 is not allowed"),
    ("sjc-toy", ["system.guidance.max_batch=0"], "system.guidance.max_batch=0 is not allowed"),
    ("sjc-toy", ["system.geometry.grid_size=[4,4,1]"], "system.geometry.grid_size=[4, 4, 1] is not allowed: must be a list of 3 values"),
    ("sjc-toy", ["system.geometry.normal_type=analytic"], "system.geometry.normal_type='analytic' is not allowed"),
    ("sjc-toy", ["system.emptiness_scale=0"], "system.emptiness_scale=0.0 is not allowed"),
    ("magic3d-coarse-toy", ["system.optimizer.params.background.lr=0"], "system.optimizer.params.background={'lr': 0} is not allowed"),
    ("magic3d-coarse-toy", ["data.fovy_range=[70,40]"], "data.fovy_range=[70.0, 40.0] is not allowed"),
    ("magic3d-refine-toy", ["system.geometry.isosurface_resolution=1"], "system.geometry.isosurface_resolution=1 is not allowed"),
    ("magic3d-refine-toy", ["system.geometry.shape_init=cube"], "system.geometry.shape_init='cube' is not allowed"),
    ("magic3d-refine-toy", ["system.renderer.near=200"], "system.renderer.near=200.0 is not allowed: must be < far (100.0)"),
    ("magic3d-refine-toy", ["system.geometry_convert_threshold=-1"], "system.geometry_convert_threshold=-1 is not allowed"),
    ("prolificdreamer-toy", ["system.guidance.camera_condition_dropout=2"], "system.guidance.camera_condition_dropout=2.0 is not allowed"),
    ("prolificdreamer-toy", ["system.guidance.lora_rank=0"], "system.guidance.lora_rank=0 is not allowed"),
    ("prolificdreamer-geometry-toy", ["system.guide=depth"], "system.guide='depth' is not allowed"),
    ("zero123-toy", ["data.random_camera.height=0"], "data.random_camera.height=0 is not allowed"),
    ("zero123-toy", ["data.height=[64,0]", "data.width=[64,64]", "data.resolution_milestones=[100]"], "data.height=[64, 0] is not"),
    ("zero123-toy", ["data.resolution_milestones=[200,100]", "data.height=[32,48,64]", "data.width=[32,48,64]"],
     "data.resolution_milestones=[200, 100] is not allowed: must be a list of values in non-decreasing order"),
    # data.random_camera.eval_fovy_deg is ${..default_fovy_deg}: the nested node reports it (the walk goes deepest first)
    ("zero123-toy", ["data.default_fovy_deg=0"], "data.random_camera.eval_fovy_deg=0.0 is not allowed"),
    ("zero123-toy", ["data.default_light_distance=-1"], "data.default_light_distance=-1.0 is not allowed"),
    ("zero123-toy", ["data.recenter_fraction=1.5"], "data.recenter_fraction=1.5 is not allowed: must be a number in (0, 1] (or null)"),
    ("zero123-toy", ["data.background_removal=magic"], "data.background_removal='magic' is not allowed"),
    ("zero123-toy", ["system.reference_shading=glossy"], "system.reference_shading='glossy' is not allowed"),
    ("zero123-toy", ["system.material.ambient_ratio_range=[0.8,0.5]"], "system.material.ambient_ratio_range=[0.8, 0.5] is not allowed"),
    # max_step_percent falls to 0.5 at step 400: a lower end of 0.6 crosses it there
    ("zero123-toy", ["system.guidance.min_step_percent=0.6"], "system.guidance.min_step_percent=0.6 is not allowed: must be <= max_step_percent"),
    ("dreamfusion-sd", ["system.guidance.prior.vae_chunk_size=-1"], "system.guidance.prior.vae_chunk_size=-1 is not allowed"),
    ("dreamfusion-sd", ["system.prompt_processor.front_threshold=200"], "system.prompt_processor.front_threshold=200.0 is not allowed"),
    ("dreamfusion-sd", ["system.prompt_processor.text_encoder_device=tpu"], "system.prompt_processor.text_encoder_device='tpu' is not allowed"),
    ("dreamfusion-sd", ["system.guidance.grad_clip=0"], "system.guidance.grad_clip=0 is not allowed"),
    ("dreamfusion-sd", ["system.background.sh_degree=5"], "system.background.sh_degree=5 is not allowed"),
    ("train-toy-view-prior", ["data.views_per_scene=1"], "data.views_per_scene=1 is not allowed: must be an integer >= 2"),
    ("train-toy-view-prior", ["system.lr=0"], "system.lr=0.0 is not allowed"),
    ("train-toy-view-prior", ["system.lr_decay_start=300", "system.lr_decay_end=200"], "system.lr_decay_end=200 is not allowed: must be given with lr_decay_start"),
    ("train-toy-text-prior", ["data.dataset.composite_fraction=1.5"], "data.dataset.composite_fraction=1.5 is not allowed"),
    ("train-toy-text-prior", ["system.save_dtype=bfloat16"], "system.save_dtype='bfloat16' is not allowed"),
]


@functools.lru_cache(maxsize=None)
def required_values(name: str, picture) -> tuple[str, ...]:
    """The overrides that fill a method's required (`???`) values."""
    fill = {
        "system.prompt": PROMPT,
        "data.image_path": f"data.image_path={picture}",
        "system.geometry_convert_from": "system.geometry_convert_from=null",
    }
    missing = missing_keys(compose_method(name))
    assert set(missing) <= set(fill), f"{name} requires {missing}"
    return tuple(fill[key] for key in missing)


def test_the_table_covers_the_required_cases():
    assert len(BAD) >= 40
    assert {"dreamfusion-toy", "sjc-toy", "magic3d-coarse-toy", "magic3d-refine-toy", "prolificdreamer-toy", "zero123-toy",
            "dreamfusion-sd"} <= {method for method, _, _ in BAD}


@pytest.mark.parametrize("method, overrides, message", BAD, ids=[f"{m}:{' '.join(o)}" for m, o, _ in BAD])
def test_a_bad_value_is_reported_with_its_full_key_before_training(method, overrides, message, toy_picture):
    cfg = compose_method(method, [*required_values(method, toy_picture), *overrides])
    with pytest.raises(FieldValueError) as info:
        check_run_config(cfg)
    assert str(info.value).startswith(message), str(info.value)
    key = message.split("=", 1)[0]
    assert info.value.key == key


def test_a_value_of_the_wrong_type_is_refused_while_composing():
    with pytest.raises(ConfigCompositionException):
        compose_method("dreamfusion-toy", [PROMPT, "data.eval_height=abc"])


# ---------------------------------------------------------------------------------------------
# (c) every shipped config passes its rules: no default and no YAML value is refused


@pytest.mark.parametrize("name", METHODS + PRIOR_TRAININGS)
def test_every_config_passes_the_rules(name, toy_picture):
    check_run_config(compose_method(name, list(required_values(name, toy_picture))))
