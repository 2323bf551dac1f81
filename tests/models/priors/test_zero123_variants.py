"""Zero-1-to-3 and Stable Zero123: the pose vector T of both conventions (hand-computed), the unconditional
branch, and the tiny random folders of both variants and both projection layouts loading through Zero123Prior."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from framework.config import ConfigError
from models.priors.hf_loading import MissingWeightsError
from models.priors.zero123 import (
    CCProjection,
    CLIPCameraProjection,
    Zero123Prior,
    Zero123PriorConfig,
    relative_pose,
)

R = math.radians


def pose(cond, target, convention):
    """T for one (elevation, azimuth, distance) pair of cameras, as a list."""
    c = [torch.tensor([v], dtype=torch.float32) for v in cond]
    t = [torch.tensor([v], dtype=torch.float32) for v in target]
    return relative_pose(*c, *t, convention=convention)[0].tolist()


# ---- the pose vector --------------------------------------------------------------------------------------
def test_zero123_pose_by_hand_across_the_azimuth_seam():
    # cond el 20, az 170, d 1.6 -> target el 5, az -170, d 1.8: polar 70 -> 85 (+15), azimuth +20 across +-180
    T = pose((20.0, 170.0, 1.6), (5.0, -170.0, 1.8), "zero123")
    assert T == pytest.approx([R(15.0), math.sin(R(20.0)), math.cos(R(20.0)), 0.2], abs=1e-6)
    assert T == pytest.approx([0.2617994, 0.3420201, 0.9396926, 0.2], abs=1e-6)
    # the same target written as az 190, or the cond as az -190: the same T (sin / cos wrap)
    assert pose((20.0, 170.0, 1.6), (5.0, 190.0, 1.8), "zero123") == pytest.approx(T, abs=1e-6)
    assert pose((20.0, -190.0, 1.6), (5.0, -170.0, 1.8), "zero123") == pytest.approx(T, abs=1e-6)
    # the other way round: azimuth -20, polar -15, distance -0.2
    back = pose((5.0, -170.0, 1.8), (20.0, 170.0, 1.6), "zero123")
    assert back == pytest.approx([-R(15.0), -math.sin(R(20.0)), math.cos(R(20.0)), -0.2], abs=1e-6)
    # no change of camera: [0, 0, 1, 0]
    assert pose((30.0, 45.0, 2.0), (30.0, 45.0, 2.0), "zero123") == pytest.approx([0.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_stable_zero123_pose_ends_with_the_cond_views_polar_angle():
    T = pose((20.0, 170.0, 1.6), (5.0, -170.0, 1.8), "stable-zero123")
    # the first three entries as zero123's; the last = radians(90 - cond elevation) = radians(70), whatever the target
    assert T == pytest.approx([R(15.0), math.sin(R(20.0)), math.cos(R(20.0)), R(70.0)], abs=1e-6)
    assert T[3] == pytest.approx(1.2217305, abs=1e-6)
    assert pose((20.0, 170.0, 1.6), (60.0, 0.0, 3.0), "stable-zero123")[3] == pytest.approx(R(70.0), abs=1e-6)
    assert pose((-10.0, 0.0, 1.6), (0.0, 0.0, 1.6), "stable-zero123")[3] == pytest.approx(R(100.0), abs=1e-6)
    # distance changes do not enter Stable Zero123's T
    assert pose((20.0, 0.0, 1.0), (5.0, 30.0, 3.0), "stable-zero123") == pytest.approx(
        pose((20.0, 0.0, 2.0), (5.0, 30.0, 2.0), "stable-zero123"), abs=1e-6)


def test_unknown_pose_convention_is_a_config_error_naming_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"pose_convention.*'zero123', 'stable-zero123'"):
        relative_pose(*[torch.zeros(1)] * 6, convention="zero-123")
    # checked before any file is looked at: a typo is not reported as missing weights
    with pytest.raises(ConfigError, match=r"pose_convention='stable' is not allowed: must be one of 'zero123', 'stable-zero123'"):
        Zero123Prior(Zero123PriorConfig(pretrained_model_name_or_path=str(tmp_path / "nowhere"), pose_convention="stable"))


# ---- the tiny folders -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tiny_zero123_dir, tiny_stable_zero123_dir) -> dict[str, Path]:
    """The session's tiny folders (tests/conftest.py): Zero-1-to-3 with cc_projection/, Stable Zero123 with
    DreamGaussian's clip_camera_projection/, so both layouts load."""
    return {"zero123": tiny_zero123_dir, "stable-zero123": tiny_stable_zero123_dir}


def load(folder: Path, convention: str) -> Zero123Prior:
    return Zero123Prior(Zero123PriorConfig(pretrained_model_name_or_path=str(folder), pose_convention=convention))


CAMERAS = {"elevation": torch.tensor([5.0, 40.0]), "azimuth": torch.tensor([-170.0, 90.0]), "distance": torch.tensor([1.8, 1.6])}


@pytest.mark.parametrize("convention", ["zero123", "stable-zero123"])
def test_tiny_folder_loads_in_latent_space_with_the_real_classes(folders, convention):
    prior = load(folders[convention], convention)
    index = json.loads((folders[convention] / "model_index.json").read_text())
    assert index["pose_convention"] == convention
    assert prior.latent_space and prior.unet.config.in_channels == 8 and prior.unet.config.out_channels == 4
    layout = CCProjection if convention == "zero123" else CLIPCameraProjection
    assert isinstance(prior.cc_projection, layout)
    assert torch.allclose(prior.image_std, torch.tensor([0.26862954, 0.26130258, 0.27577711]))  # CLIP's, from feature_extractor/
    assert prior.num_train_timesteps == 1000
    rgb = torch.rand(2, 40, 40, 3, requires_grad=True)
    z = prior.encode(rgb)
    assert z.shape == (2, 4, 4, 4)  # 32² images, 8x down
    z.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    prior.set_condition_image(torch.rand(1, 40, 40, 3), 20.0, 170.0, 1.6)
    assert prior.cond["c_concat"].shape == (1, 4, 4, 4)
    eps_c, eps_u = prior.predict_noise(torch.randn(2, 4, 4, 4), torch.tensor([300, 800]), None, CAMERAS, True)
    assert eps_c.shape == eps_u.shape == (2, 4, 4, 4) and torch.isfinite(eps_c).all()


@pytest.mark.parametrize("convention", ["zero123", "stable-zero123"])
def test_predict_noise_uses_the_configured_convention(folders, convention):
    """The stored view + the batch's cameras give the T of the prior's convention (the explicit-T path as reference)."""
    torch.manual_seed(0)
    prior = load(folders[convention], convention)
    prior.set_condition_image(torch.rand(1, 32, 32, 3), 20.0, 170.0, 1.6)
    x_t, t = torch.randn(2, 4, 4, 4), torch.tensor([300, 800])
    cond = [torch.full((2,), v) for v in (20.0, 170.0, 1.6)]
    targets = [CAMERAS[k] for k in ("elevation", "azimuth", "distance")]
    own = relative_pose(*cond, *targets, convention=convention)
    other = relative_pose(*cond, *targets, convention="zero123" if convention == "stable-zero123" else "stable-zero123")
    from_cameras, _ = prior.predict_noise(x_t, t, None, CAMERAS, False)
    with_own, _ = prior.predict_noise(x_t, t, dict(prior.cond, T=own), CAMERAS, False)
    with_other, _ = prior.predict_noise(x_t, t, dict(prior.cond, T=other), CAMERAS, False)
    torch.testing.assert_close(from_cameras, with_own)
    assert (from_cameras - with_other).abs().max() > 1e-4


def test_unconditional_branch_is_zeros_for_token_and_concat_latent(folders):
    """One batched UNet forward on [cond, uncond]: uncond's concatenated latent and cross-attention token are zeros."""
    prior = load(folders["zero123"], "zero123")
    prior.set_condition_image(torch.rand(1, 32, 32, 3), 20.0, 170.0, 1.6)
    seen = {}

    def record(module, args, kwargs):
        seen["x"], seen["tokens"] = args[0].clone(), kwargs["encoder_hidden_states"].clone()

    handle = prior.unet.register_forward_pre_hook(record, with_kwargs=True)
    x_t = torch.randn(2, 4, 4, 4)
    eps_c, eps_u = prior.predict_noise(x_t, torch.tensor([300, 800]), None, CAMERAS, True)
    handle.remove()
    x, tokens = seen["x"], seen["tokens"]
    assert x.shape == (4, 8, 4, 4) and tokens.shape == (4, 1, 32)
    torch.testing.assert_close(x[:2, :4], x_t)
    torch.testing.assert_close(x[2:, :4], x_t)  # the same noisy latent in both halves
    torch.testing.assert_close(x[:2, 4:], prior.cond["c_concat"].expand(2, -1, -1, -1))
    assert torch.equal(x[2:, 4:], torch.zeros_like(x[2:, 4:]))  # uncond: zero concat latent
    assert torch.equal(tokens[2:], torch.zeros_like(tokens[2:]))  # uncond: zero token (not cc_projection(0))
    assert tokens[:2].abs().sum() > 0
    # and eps_u is the UNet on exactly those zeros
    with torch.no_grad():
        direct = prior.unet(torch.cat([x_t, torch.zeros_like(x_t)], 1), torch.tensor([300, 800]),
                            encoder_hidden_states=torch.zeros(2, 1, 32)).sample
    torch.testing.assert_close(eps_u, direct)


def test_a_folder_declaring_the_other_convention_is_refused(folders):
    with pytest.raises(ConfigError, match=r"declares pose_convention 'stable-zero123'.*pose_convention=stable-zero123"):
        load(folders["stable-zero123"], "zero123")
    with pytest.raises(ConfigError, match="declares pose_convention 'zero123'"):
        load(folders["zero123"], "stable-zero123")


def test_missing_hub_id_or_folder_is_a_fast_missing_weights_error(tmp_path):
    key = "system.guidance.prior.pretrained_model_name_or_path"
    start = time.monotonic()
    with pytest.raises(MissingWeightsError) as err:
        Zero123Prior(Zero123PriorConfig(pretrained_model_name_or_path="toy3d-absent/zero123-xl-diffusers",
                                        local_files_only=True))
    message = str(err.value)
    assert "Zero-1-to-3" in message and "toy3d-absent/zero123-xl-diffusers" in message and key in message
    with pytest.raises(MissingWeightsError, match=key):
        Zero123Prior(Zero123PriorConfig(pretrained_model_name_or_path=str(tmp_path / "no-such-folder"),
                                        pose_convention="stable-zero123"))
    assert time.monotonic() - start < 10.0
