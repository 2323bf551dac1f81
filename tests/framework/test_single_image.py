"""The single-image data (Zero-1-to-3): masks from each kind of input, the checks on bad input, the
reference camera and its batch entries, the schedules, and a toy render read back at its camera."""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from framework import cameras
from framework.config import ConfigError
from framework.data.random_camera import RandomCameraDataConfig, RandomCameraIterableDataset
from framework.data.single_image import SingleImageDataConfig, SingleImageDataModule

SIZE = 16
COLOUR = (200, 40, 30)


def square_mask(size: int = SIZE, lo: int = 4, hi: int = 12) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo + 1 : hi] = True  # not square, so a transposed mask would show
    return mask


def save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def rgba_file(tmp_path: Path, mask: np.ndarray | None = None, name: str = "object_rgba.png") -> str:
    mask = square_mask() if mask is None else mask
    rgba = np.zeros(mask.shape + (4,), np.uint8)  # black under the transparent pixels: must not show
    rgba[..., :3] = COLOUR
    rgba[~mask, :3] = 0
    rgba[..., 3] = mask * 255
    return save(tmp_path / name, rgba)


def rgb_on(background: tuple[int, int, int], mask: np.ndarray | None = None) -> np.ndarray:
    mask = square_mask() if mask is None else mask
    rgb = np.empty(mask.shape + (3,), np.uint8)
    rgb[...] = background
    rgb[mask] = COLOUR
    return rgb


def module(image_path: str, **overrides) -> SingleImageDataModule:
    overrides.setdefault("height", SIZE)
    overrides.setdefault("width", SIZE)
    random_camera = overrides.pop("random_camera", {})
    rc = RandomCameraDataConfig(**{"height": 4, "width": 4, "seed": 0, **random_camera})
    return SingleImageDataModule(SingleImageDataConfig(image_path=image_path, random_camera=rc, **overrides))


def reference(dm: SingleImageDataModule, step: int = 0) -> dict:
    dm.update_step(step)
    return next(iter(dm.train_dataloader()))["reference"]


def expected_rgb(mask: np.ndarray) -> torch.Tensor:
    """(1, H, W, 3): the colour on the object, white elsewhere."""
    rgb = np.ones(mask.shape + (3,), np.float32)
    rgb[mask] = np.array(COLOUR, np.float32) / 255.0
    return torch.from_numpy(rgb)[None]


# ---- the three ways to give the mask ----


def test_rgba_alpha_is_the_mask_and_the_colour_is_over_white(tmp_path):
    ref = reference(module(rgba_file(tmp_path)))
    mask = square_mask()
    assert ref["mask"].shape == (1, SIZE, SIZE, 1) and ref["rgb"].shape == (1, SIZE, SIZE, 3)
    assert torch.equal(ref["mask"][0, ..., 0], torch.from_numpy(mask).float())
    torch.testing.assert_close(ref["rgb"], expected_rgb(mask))
    assert "depth" not in ref and "normal" not in ref


@pytest.mark.parametrize("kind", ["L-0-255", "L-0-1", "RGB", "RGBA-alpha"])
def test_rgb_with_a_mask_file(tmp_path, kind):
    mask = square_mask()
    image = save(tmp_path / "photo.png", rgb_on((90, 160, 90)))
    if kind == "L-0-255":
        m = (mask * 255).astype(np.uint8)
    elif kind == "L-0-1":  # a 0/1 mask saved as 8-bit: "> 0.5 of its maximum" still finds it
        m = mask.astype(np.uint8)
    elif kind == "RGB":
        m = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, -1)
    else:
        m = np.zeros(mask.shape + (4,), np.uint8)
        m[..., 3] = mask * 255
    ref = reference(module(image, mask_path=save(tmp_path / "mask.png", m)))
    assert torch.equal(ref["mask"][0, ..., 0], torch.from_numpy(mask).float())
    torch.testing.assert_close(ref["rgb"], expected_rgb(mask))  # the green background became white


@pytest.mark.parametrize("background", [(255, 255, 255), (128, 128, 140)])
def test_white_background_removal_recovers_the_mask(tmp_path, background):
    image = save(tmp_path / "plain.png", rgb_on(background))
    ref = reference(module(image, background_removal="white"))
    assert torch.equal(ref["mask"][0, ..., 0], torch.from_numpy(square_mask()).float())


def test_rembg_removal_uses_the_cut_out_alpha(tmp_path, monkeypatch):
    mask = square_mask()

    def remove(image, session=None):
        rgba = np.concatenate([np.asarray(image), (mask * 255).astype(np.uint8)[..., None]], -1)
        return Image.fromarray(rgba)

    fake = types.SimpleNamespace(new_session=lambda *a, **k: object(), remove=remove)
    monkeypatch.setitem(sys.modules, "rembg", fake)
    ref = reference(module(save(tmp_path / "photo.png", rgb_on((20, 20, 20))), background_removal="rembg"))
    assert torch.equal(ref["mask"][0, ..., 0], torch.from_numpy(mask).float())


# ---- bad input: a ConfigError at construction that names the problem ----


def bad_inputs(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """case -> (module arguments, a regex the error message must match)."""
    full = np.ones((SIZE, SIZE), bool)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(rgba_file(tmp_path, name="whole.png")).read_bytes()[:60])
    la = np.zeros((SIZE, SIZE, 2), np.uint8)
    checkerboard = np.repeat(((np.indices((SIZE, SIZE)).sum(0) % 2) * 255).astype(np.uint8)[..., None], 3, -1)
    return {
        "missing": (dict(image_path=str(tmp_path / "nope.png")), "does not exist"),
        "directory": (dict(image_path=str(tmp_path)), "is a directory"),
        "not an image": (dict(image_path=str(not_image)), "not an image"),
        "truncated": (dict(image_path=str(truncated)), "could not be read"),
        "unset": (dict(image_path="???"), "image_path is required"),
        "two channels": (dict(image_path=save(tmp_path / "la.png", la)), "has 2 channels"),
        "rgb without a mask": (dict(image_path=save(tmp_path / "rgb.png", rgb_on((255, 255, 255)))), "three ways"),
        "empty mask": (dict(image_path=rgba_file(tmp_path, np.zeros((SIZE, SIZE), bool), "empty.png")), "is empty"),
        "full mask": (dict(image_path=rgba_file(tmp_path, full, "full.png")), "is full"),
        "white on an object-only image": (
            dict(image_path=save(tmp_path / "busy.png", rgb_on((255, 255, 255), full)), background_removal="white"),
            "is empty.*lower it",
        ),
        "white on a checkerboard": (  # corners black, white, white, black: no pixel near their median
            dict(image_path=save(tmp_path / "check.png", checkerboard), background_removal="white"),
            "is full.*raise it",
        ),
        "mask of another size": (
            dict(
                image_path=save(tmp_path / "rgb2.png", rgb_on((255, 255, 255))),
                mask_path=save(tmp_path / "small.png", np.zeros((8, 8), np.uint8)),
            ),
            "same size",
        ),
        "missing mask": (
            dict(image_path=save(tmp_path / "rgb3.png", rgb_on((255, 255, 255))), mask_path=str(tmp_path / "m.png")),
            "mask_path",
        ),
        "unknown removal": (
            dict(image_path=rgba_file(tmp_path), background_removal="magic"), "background_removal='magic' is not allowed"
        ),
        "mask and removal": (
            dict(image_path=rgba_file(tmp_path), background_removal="white", mask_path=rgba_file(tmp_path)),
            "only one",
        ),
        "vanishes at low resolution": (
            dict(image_path=rgba_file(tmp_path, square_mask(lo=7, hi=9), "tiny.png"), height=2, width=2),
            "at the reference resolution 2x2",
        ),
        "bad height schedule": (
            dict(image_path=rgba_file(tmp_path), height=[8, 16], width=[8, 16]),
            r"height lists need len\(resolution_milestones\) \+ 1",
        ),
        "recenter out of range": (dict(image_path=rgba_file(tmp_path), recenter_fraction=1.5), "recenter_fraction"),
    }


CASES = [
    "missing", "directory", "not an image", "truncated", "unset", "two channels", "rgb without a mask",
    "empty mask", "full mask", "white on an object-only image", "white on a checkerboard",
    "mask of another size", "missing mask", "unknown removal", "mask and removal",
    "vanishes at low resolution", "bad height schedule", "recenter out of range",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_config_error_naming_the_problem(tmp_path, case):
    overrides, message = bad_inputs(tmp_path)[case]
    image_path = overrides.pop("image_path")
    with pytest.raises(ConfigError, match=message):  # a regex
        module(image_path, **overrides)


def test_every_bad_input_case_runs(tmp_path):
    assert sorted(CASES) == sorted(bad_inputs(tmp_path))


def test_rgb_without_mask_lists_the_three_ways(tmp_path):
    with pytest.raises(ConfigError) as error:
        module(save(tmp_path / "rgb.png", rgb_on((255, 255, 255))))
    assert all(word in str(error.value) for word in ("RGBA", "mask_path", "background_removal", "rgb.png"))


def test_rembg_not_installed_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", None)  # import rembg -> ImportError
    with pytest.raises(ConfigError, match=r"pip install rembg.*downloads on first use"):
        module(save(tmp_path / "rgb.png", rgb_on((255, 255, 255))), background_removal="rembg")


def test_rembg_model_not_fetched_says_so(tmp_path, monkeypatch):
    def new_session(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "rembg", types.SimpleNamespace(new_session=new_session, remove=None))
    with pytest.raises(ConfigError, match=r"ConnectionError: no route to host.*downloads its model on first use"):
        module(save(tmp_path / "rgb.png", rgb_on((255, 255, 255))), background_removal="rembg")


# ---- depth and normal maps beside the image ----


@pytest.mark.parametrize("naming", ["stem", "threestudio"])
def test_depth_and_normal_are_picked_up(tmp_path, naming):
    image = rgba_file(tmp_path, name="cat_rgba.png")
    stem = "cat_rgba" if naming == "stem" else "cat"
    depth = np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) * 200  # 16-bit
    Image.fromarray(depth).save(tmp_path / f"{stem}_depth.png")
    normal = np.zeros((SIZE, SIZE, 3), np.uint8)
    normal[..., 0], normal[..., 1], normal[..., 2] = 255, 0, 128
    save(tmp_path / f"{stem}_normal.png", normal)
    dm = module(image)
    ref = reference(dm)
    assert dm.has_depth and dm.has_normal
    assert ref["depth"].shape == (1, SIZE, SIZE, 1) and ref["normal"].shape == (1, SIZE, SIZE, 3)
    torch.testing.assert_close(ref["depth"][0, ..., 0], torch.from_numpy(depth.astype(np.float32) / 65535.0))
    torch.testing.assert_close(ref["normal"][0, 3, 5], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))


def test_depth_map_of_the_wrong_kind_is_refused(tmp_path):
    image = rgba_file(tmp_path, name="cat.png")
    save(tmp_path / "cat_depth.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ConfigError, match="cat_depth.png.*one channel"):
        module(image)


# ---- the reference camera ----


def test_reference_camera_is_look_at_from_the_defaults(tmp_path):
    dm = module(rgba_file(tmp_path), height=6, width=8, default_elevation_deg=15.0, default_azimuth_deg=30.0,
                default_camera_distance=2.5, default_fovy_deg=40.0)
    ref = reference(dm)
    eye = cameras.spherical_to_cartesian(torch.tensor([15.0]), torch.tensor([30.0]), torch.tensor([2.5]))
    c2w = cameras.look_at(eye, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(ref["c2w"], c2w)
    fovy = torch.tensor([math.radians(40.0)])
    torch.testing.assert_close(ref["fovy"], fovy)
    rays_o, rays_d = cameras.get_rays(c2w, fovy, 6, 8)
    torch.testing.assert_close(ref["rays_o"], rays_o)
    torch.testing.assert_close(ref["rays_d"], rays_d)
    assert (ref["height"], ref["width"]) == (6, 8) and ref["rgb"].shape == (1, 6, 8, 3)
    torch.testing.assert_close(ref["camera_position"], eye)
    torch.testing.assert_close(ref["light_position"], eye)  # a head-light by default
    for key, value in (("elevation", 15.0), ("azimuth", 30.0), ("distance", 2.5)):
        torch.testing.assert_close(ref[key], torch.tensor([value]))
    assert (dm.reference_elevation_deg, dm.reference_azimuth_deg, dm.reference_camera_distance, dm.reference_fovy_deg) == (
        15.0, 30.0, 2.5, 40.0)


def test_reference_light_distance_and_azimuth_wrap(tmp_path):
    dm = module(rgba_file(tmp_path), default_azimuth_deg=180.0, default_camera_distance=2.0, default_light_distance=5.0)
    ref = reference(dm)
    assert ref["azimuth"].item() == -180.0 and dm.reference_azimuth_deg == -180.0
    torch.testing.assert_close(ref["camera_position"], torch.tensor([[-2.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ref["light_position"], torch.tensor([[-5.0, 0.0, 0.0]]), atol=1e-6, rtol=0)


def test_reference_image_is_full_resolution_over_white(tmp_path):
    mask = square_mask(32, 8, 24)
    dm = module(rgba_file(tmp_path, mask), height=8, width=8)
    rgb, camera = dm.reference_image()
    torch.testing.assert_close(rgb, expected_rgb(mask))
    assert camera["rays_d"].shape == (1, 32, 32, 3) and (camera["height"], camera["width"]) == (32, 32)
    torch.testing.assert_close(camera["c2w"], reference(dm)["c2w"])


def test_downscaled_reference_is_the_block_mean(tmp_path):
    mask = square_mask(32, 8, 24)
    ref = reference(module(rgba_file(tmp_path, mask), height=8, width=8))
    full = expected_rgb(mask)[0].permute(2, 0, 1)
    blocks = torch.nn.functional.avg_pool2d(full, 4).permute(1, 2, 0)
    torch.testing.assert_close(ref["rgb"][0], blocks)


def test_recentring_scales_and_centres_the_bounding_box(tmp_path):
    mask = np.zeros((32, 32), bool)
    mask[0:4, 0:8] = True  # an 8-wide box in the top-left corner
    ref = reference(module(rgba_file(tmp_path, mask), height=32, width=32, recenter_fraction=0.5))
    rows = torch.nonzero(ref["mask"][0, :, :, 0].any(1)).squeeze(-1)
    cols = torch.nonzero(ref["mask"][0, :, :, 0].any(0)).squeeze(-1)
    assert (cols[0].item(), cols[-1].item() + 1) == (8, 24)  # 16 = half of 32, centred
    assert (rows[0].item(), rows[-1].item() + 1) == (12, 20)  # the aspect ratio kept
    assert ref["rgb"][0, 0, 0].tolist() == [1.0, 1.0, 1.0]


# ---- schedules and the random views ----


def test_resolution_and_batch_size_schedules_switch_at_the_milestones(tmp_path):
    dm = module(
        rgba_file(tmp_path), height=[8, 16], width=[8, 16], resolution_milestones=[5],
        random_camera={"height": [4, 6], "width": [4, 6], "batch_size": [3, 1], "resolution_milestones": [5]},
    )
    shapes = {}
    for step in (0, 4, 5, 9):
        dm.update_step(step)
        batch = next(iter(dm.train_dataloader()))
        shapes[step] = (batch["reference"]["rgb"].shape[1], batch["rays_d"].shape[:3], batch["height"])
    assert shapes[0] == shapes[4] == (8, (3, 4, 4), 4)
    assert shapes[5] == shapes[9] == (16, (1, 6, 6), 6)


def test_random_views_are_the_random_camera_batch(tmp_path):
    rc = {"batch_size": 2, "height": 5, "width": 7, "seed": 3}
    batch = next(iter(module(rgba_file(tmp_path), random_camera=rc).train_dataloader()))
    plain = RandomCameraIterableDataset(RandomCameraDataConfig(**rc)).sample()
    assert set(batch) == set(plain) | {"reference"}
    for key, value in plain.items():
        if torch.is_tensor(value):
            torch.testing.assert_close(batch[key], value)
        else:
            assert batch[key] == value
    camera_keys = set(plain)
    assert camera_keys <= set(batch["reference"]) and set(batch["reference"]) - camera_keys == {"rgb", "mask"}


def test_val_and_test_are_the_random_camera_turntables(tmp_path):
    dm = module(rgba_file(tmp_path), random_camera={"n_val_views": 3, "n_test_views": 5, "eval_height": 4,
                                                     "eval_width": 4, "eval_elevation_deg": 12.0})
    val = list(dm.val_dataloader())
    assert len(val) == 3 and len(list(dm.test_dataloader())) == 5
    assert val[0]["rays_d"].shape == (1, 4, 4, 3) and val[1]["elevation"].item() == 12.0


def test_the_yaml_option_composes_and_the_turntable_follows_the_reference_camera(tmp_path):
    from hydra import compose, initialize_config_dir

    import launch  # noqa: F401  (registers the schemas, as launch.py does)
    from framework.config import instantiate, missing_keys

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        assert "data.image_path" in missing_keys(compose(config_name="dreamfusion-toy", overrides=["data=single-image"]))
    overrides = ["data=single-image", f"data.image_path={rgba_file(tmp_path)}", "data.height=8", "data.width=8",
                 "data.default_elevation_deg=7.5", "data.random_camera.height=4", "data.random_camera.width=4"]
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="dreamfusion-toy", overrides=overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, SingleImageDataModule)
    assert dm.cfg.random_camera.eval_elevation_deg == 7.5
    assert dm.cfg.random_camera.eval_fovy_deg == dm.cfg.default_fovy_deg
    assert reference(dm)["rgb"].shape == (1, 8, 8, 3)


# ---- a toy render read back at the reference camera ----


def test_a_toy_render_at_the_reference_camera_matches_the_input(tmp_path):
    from models.priors.toy.render import render_scene  # tests may import models/; framework/ may not
    from models.priors.toy.scenes import parse_prompt

    scene = parse_prompt("a red cube on top of a blue sphere")
    elevation, azimuth, distance, fovy_deg = 20.0, 35.0, 1.6, 40.0
    c2w = cameras.orbit_c2w(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([distance]))
    fovy = torch.tensor([math.radians(fovy_deg)])
    full = render_scene(scene, c2w, fovy, 48, 48)  # no supersampling: alpha is 0 or 1
    rgba = torch.cat([full["rgb"], full["opacity"]], -1)[0]
    image = save(tmp_path / "toy_rgba.png", (rgba.numpy() * 255).round().astype(np.uint8))

    dm = module(image, height=24, width=24, default_elevation_deg=elevation, default_azimuth_deg=azimuth,
                default_camera_distance=distance, default_fovy_deg=fovy_deg)
    ref = reference(dm)
    # the renderer's rays are get_rays(c2w, fovy): the batch's rays are the same, so render at its camera
    rays_o, rays_d = cameras.get_rays(ref["c2w"], ref["fovy"], 24, 24)
    torch.testing.assert_close(ref["rays_o"], rays_o)
    torch.testing.assert_close(ref["rays_d"], rays_d)
    # halving a 48² render by the area filter = a 2x2-supersampled render at 24²
    truth = render_scene(scene, ref["c2w"], ref["fovy"], 24, 24, supersample=2)
    torch.testing.assert_close(ref["rgb"], truth["rgb"], atol=2 / 255, rtol=0)
    assert torch.equal(ref["mask"], (truth["opacity"] > 0.5).float())
    assert 0.05 < ref["mask"].mean() < 0.6
    rgb_full, camera = dm.reference_image()
    torch.testing.assert_close(rgb_full, render_scene(scene, camera["c2w"], camera["fovy"], 48, 48)["rgb"],
                               atol=1 / 255, rtol=0)
