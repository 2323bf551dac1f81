"""Zero123Guidance: image-conditioned SDS. Its gradient on the render is J_enc^T w(t) (eps_hat - eps) / B with
eps_hat = eps_u + s (eps_c - eps_u), computed by hand from the UNet on the tiny random folders of both variants;
the reference view is required; the t schedules; the option YAMLs compose and build."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import launch  # noqa: F401  (registers the schemas, as launch.py does)
from framework.config import ConfigError, instantiate
from models.guidance.rule import timestep_bounds
from models.guidance.zero123 import Zero123Guidance, Zero123GuidanceConfig
from models.priors.base import DiffusionPrior
from models.priors.zero123 import Zero123Prior, Zero123PriorConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TOY_VIEW_PRIOR = REPO / "models/priors/toy/weights/toy-view-prior"
R = math.radians


@pytest.fixture(scope="module")
def folders(tiny_zero123_dir, tiny_stable_zero123_dir) -> dict[str, Path]:
    """The session's tiny folders (tests/conftest.py): Zero-1-to-3 with cc_projection/, Stable Zero123 with
    DreamGaussian's clip_camera_projection/, so both layouts load."""
    return {"zero123": tiny_zero123_dir, "stable-zero123": tiny_stable_zero123_dir}


def guidance_for(folder: Path, convention: str, **kw) -> Zero123Guidance:
    prior = Zero123PriorConfig(pretrained_model_name_or_path=str(folder), pose_convention=convention)
    return Zero123Guidance(Zero123GuidanceConfig(prior=prior, **kw))


# The reference camera and two target cameras whose T is written out by hand below.
REFERENCE = (20.0, 170.0, 1.6)
BATCH = {"elevation": torch.tensor([5.0, 20.0]), "azimuth": torch.tensor([-170.0, 80.0]), "distance": torch.tensor([1.8, 1.6])}
HAND_T = {
    # [radians(delta polar), sin(delta az), cos(delta az), last]; cond el 20 az 170 d 1.6
    # target 1: el 5 (polar +15), az -170 (+20 across the seam), d 1.8; target 2: el 20, az 80 (-90), d 1.6
    "zero123": [[R(15), math.sin(R(20)), math.cos(R(20)), 0.2], [0.0, -1.0, 0.0, 0.0]],
    "stable-zero123": [[R(15), math.sin(R(20)), math.cos(R(20)), R(70)], [0.0, -1.0, 0.0, R(70)]],
}


@pytest.mark.parametrize("convention", ["zero123", "stable-zero123"])
def test_render_gradient_is_the_weighted_guided_residual_through_the_encoder(folders, convention):
    torch.manual_seed(0)
    guidance = guidance_for(folders[convention], convention)
    prior = guidance.prior
    assert guidance.guidance_scale == 3.0
    reference = torch.rand(1, 48, 48, 3)
    guidance.set_reference(reference, *REFERENCE)

    # keep the latent the guidance encodes (the VAE samples it), to differentiate through it by hand
    kept = {}
    encode = prior.encode

    def keep(rgb):
        kept["z"] = encode(rgb)
        return kept["z"]

    prior.encode = keep
    rgb = torch.rand(2, 48, 48, 3, requires_grad=True)
    t = torch.tensor([450, 700])
    noise = torch.randn(2, 4, 4, 4)
    out = guidance(rgb, None, BATCH, t=t, noise=noise)
    assert set(out) == {"loss_sds", "grad_norm", "t_mean"} and torch.isfinite(out["loss_sds"])
    out["loss_sds"].backward(retain_graph=True)

    # by hand: z_t, the two UNet branches with T written out, CFG, w(t) = 1 - abar_t
    z = kept["z"].detach()
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = abar.sqrt() * z + (1 - abar).sqrt() * noise
    with torch.no_grad():
        T = torch.tensor(HAND_T[convention])
        tokens = prior.cc_projection(torch.cat([prior.cond["image_embeds"].expand(2, -1), T], -1))[:, None]
        concat = prior.cond["c_concat"].expand(2, -1, -1, -1)
        eps_c = prior.unet(torch.cat([z_t, concat], 1), t, encoder_hidden_states=tokens).sample
        eps_u = prior.unet(torch.cat([z_t, torch.zeros_like(concat)], 1), t,
                           encoder_hidden_states=torch.zeros_like(tokens)).sample
    eps_hat = eps_u + 3.0 * (eps_c - eps_u)
    grad_z = (1 - abar) * (eps_hat - noise)
    # loss = 0.5 ||z - sg(z - grad)||^2 / B, so dL/dz = grad / B and dL/drgb = J_enc^T grad / B
    loss_by_hand = 0.5 * (grad_z ** 2).sum() / 2
    torch.testing.assert_close(out["loss_sds"], loss_by_hand, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["grad_norm"], grad_z.norm(), rtol=1e-4, atol=1e-6)
    (expected_rgb_grad,) = torch.autograd.grad(kept["z"], rgb, grad_outputs=grad_z / 2)
    torch.testing.assert_close(rgb.grad, expected_rgb_grad, rtol=1e-4, atol=1e-7)
    assert rgb.grad.abs().sum() > 0
    assert out["t_mean"].item() == pytest.approx(575.0)


def test_condition_argument_is_ignored(folders):
    guidance = guidance_for(folders["zero123"], "zero123")
    guidance.set_reference(torch.rand(1, 32, 32, 3), *REFERENCE)
    rgb, t, noise = torch.rand(2, 32, 32, 3), torch.tensor([300, 600]), torch.randn(2, 4, 4, 4)
    losses = []
    for condition in (None, "a text condition from some prompt processor"):
        torch.manual_seed(0)  # the VAE's latent sample
        losses.append(guidance(rgb, condition, BATCH, t=t, noise=noise)["loss_sds"])
    torch.testing.assert_close(losses[0], losses[1])


def test_forward_before_set_reference_says_what_to_do(folders):
    guidance = guidance_for(folders["zero123"], "zero123")
    with pytest.raises(RuntimeError, match=r"before set_reference.*set_reference\(rgb"):
        guidance(torch.rand(1, 32, 32, 3), None, BATCH)


def test_set_reference_checks_the_image(folders):
    guidance = guidance_for(folders["zero123"], "zero123")
    with pytest.raises(ValueError, match=r"\(1, H, W, 3\)"):
        guidance.set_reference(torch.rand(1, 32, 32, 4), *REFERENCE)  # RGBA: composite over white first
    with pytest.raises(ValueError, match=r"\(1, H, W, 3\)"):
        guidance.set_reference(torch.rand(2, 32, 32, 3), *REFERENCE)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        guidance.set_reference(torch.rand(1, 32, 32, 3) * 255, *REFERENCE)
    assert guidance.reference is None
    guidance.set_reference(torch.rand(1, 32, 32, 3), *REFERENCE)
    assert guidance.reference == {"elevation": 20.0, "azimuth": 170.0, "distance": 1.6}


def test_timestep_schedules_zero123_and_stable_zero123(folders):
    guidance = guidance_for(folders["zero123"], "zero123")  # the dataclass defaults: threestudio's zero123
    for step, (lo, hi) in {0: (0.4, 0.85), 100: (0.3, 0.675), 200: (0.2, 0.5), 5000: (0.2, 0.5)}.items():
        guidance.update_step(step)
        assert (guidance.min_step, guidance.max_step) == timestep_bounds(1000, lo, hi)
    assert timestep_bounds(1000, 0.4, 0.85) == (400, 850) and timestep_bounds(1000, 0.2, 0.5) == (200, 500)
    stable = guidance_for(folders["stable-zero123"], "stable-zero123",
                          min_step_percent=[[50, 0.7], [200, 0.3]], max_step_percent=[[50, 0.98], [200, 0.8]])
    for step, bounds in {0: (700, 980), 50: (700, 980), 200: (300, 800), 900: (300, 800)}.items():
        stable.update_step(step)
        assert (stable.min_step, stable.max_step) == bounds
    torch.manual_seed(0)
    t = stable.sample_timesteps(4000, torch.device("cpu"))
    assert t.min() >= 300 and t.max() <= 800 and t.max() - t.min() > 450


class FakeViewPrior(DiffusionPrior):
    """Any prior with the view-conditioned interface: a pixel-space denoiser that reads the stored view
    and the target cameras (eps_c = 0.3 x_t + 0.01 elevation + mean(view), eps_u = -0.2 x_t)."""

    def __init__(self):
        super().__init__()
        self.set_noise_schedule(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0))
        self.view = None

    def set_condition_image(self, rgb, elevation_deg, azimuth_deg, distance):
        self.view = rgb.mean()

    def encode(self, rgb):
        return rgb.permute(0, 3, 1, 2) * 2 - 1

    def predict_noise(self, x_t, t, condition, batch, need_uncond):
        assert condition is None
        eps_c = 0.3 * x_t + 0.01 * batch["elevation"].view(-1, 1, 1, 1) + self.view
        return eps_c, (-0.2 * x_t if need_uncond else None)


def test_works_with_any_prior_of_the_view_conditioned_interface():
    guidance = Zero123Guidance(Zero123GuidanceConfig(guidance_scale=2.0), prior=FakeViewPrior())
    guidance.set_reference(torch.full((1, 8, 8, 3), 0.5), *REFERENCE)
    rgb = torch.rand(2, 8, 8, 3, requires_grad=True)
    t, noise = torch.tensor([450, 800]), torch.randn(2, 3, 8, 8)
    guidance(rgb, None, BATCH, t=t, noise=noise)["loss_sds"].backward()
    abar = guidance.prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    z = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    z_t = abar.sqrt() * z + (1 - abar).sqrt() * noise
    eps_c, eps_u = 0.3 * z_t + 0.01 * BATCH["elevation"].view(-1, 1, 1, 1) + 0.5, -0.2 * z_t
    grad_z = (1 - abar) * (eps_u + 2.0 * (eps_c - eps_u) - noise)
    # z = 2 rgb - 1, so dL/drgb = 2 grad_z / B with B = 2
    torch.testing.assert_close(rgb.grad, (2 * grad_z / 2).permute(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_a_prior_without_a_condition_image_is_refused():
    class TextOnly(DiffusionPrior):
        def __init__(self):
            super().__init__()
            self.set_noise_schedule(torch.linspace(0.99, 0.01, 1000))

    with pytest.raises(ConfigError, match="set_condition_image"):
        Zero123Guidance(Zero123GuidanceConfig(), prior=TextOnly())


def test_missing_weights_through_the_guidance_config_name_the_key(tmp_path):
    prior = Zero123PriorConfig(pretrained_model_name_or_path=str(tmp_path / "absent"), pose_convention="stable-zero123")
    with pytest.raises(Exception, match="system.guidance.prior.pretrained_model_name_or_path") as err:
        Zero123Guidance(Zero123GuidanceConfig(prior=prior))
    assert type(err.value).__name__ == "MissingWeightsError" and "Zero-1-to-3" in str(err.value)


# ---- the option YAMLs ---------------------------------------------------------------------------------------
def compose_guidance(option: str, overrides: list[str] = ()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=[f"+system/guidance={option}", *overrides])
    return cfg.system.guidance


@pytest.mark.parametrize("option, convention", [("zero123", "zero123"), ("stable-zero123", "stable-zero123")])
def test_real_model_options_compose_with_threestudios_defaults_and_build_on_tiny_folders(folders, option, convention):
    cfg = compose_guidance(option)
    assert cfg._target_ == "models.guidance.zero123.Zero123Guidance"
    assert cfg.prior._target_ == "models.priors.zero123.Zero123Prior"
    assert cfg.prior.pose_convention == convention and cfg.guidance_scale == 3.0 and cfg.weighting == "sds"
    assert "/" in cfg.prior.pretrained_model_name_or_path and not cfg.prior.half_precision_weights
    schedules = {"zero123": ([[0, 0.4], [200, 0.2]], [[0, 0.85], [200, 0.5]]),
                 "stable-zero123": ([[50, 0.7], [200, 0.3]], [[50, 0.98], [200, 0.8]])}[option]
    assert (OmegaConf.to_container(cfg.min_step_percent), OmegaConf.to_container(cfg.max_step_percent)) == schedules
    cfg = compose_guidance(option, [f"system.guidance.prior.pretrained_model_name_or_path={folders[convention]}"])
    guidance = instantiate(cfg)
    assert isinstance(guidance, Zero123Guidance) and isinstance(guidance.prior, Zero123Prior)
    assert guidance.prior.pose_convention == convention


def test_a_typo_in_the_pose_convention_is_caught():
    with pytest.raises(ConfigError, match="pose_convention"):
        instantiate(compose_guidance("zero123", ["system.guidance.prior.pose_convention=stable_zero123"]))


def test_toy_option_builds_on_the_shipped_view_prior_and_guides_a_toy_view():
    if not (TOY_VIEW_PRIOR / "model_index.json").is_file():
        pytest.skip(f"no committed view prior at {TOY_VIEW_PRIOR}")
    from framework.cameras import orbit_c2w
    from models.priors.toy.render import render_scene
    from models.priors.toy.scenes import parse_prompt

    guidance = instantiate(compose_guidance("zero123-toy"))
    assert not guidance.prior.latent_space and guidance.prior.pose_convention == "zero123"
    cams = torch.tensor([[20.0, 0.0, 1.6], [20.0, 90.0, 1.6], [40.0, -150.0, 1.5]])
    views = render_scene(parse_prompt("a red cube"), orbit_c2w(cams[:, 0], cams[:, 1], cams[:, 2]),
                         torch.full((3,), math.radians(40.0)), 32, 32, supersample=1)["rgb"].clamp(0, 1)
    guidance.set_reference(views[:1], 20.0, 0.0, 1.6)
    rgb = views[1:].clone().requires_grad_(True)
    out = guidance(rgb, None, {"elevation": cams[1:, 0], "azimuth": cams[1:, 1], "distance": cams[1:, 2]})
    out["loss_sds"].backward()
    assert torch.isfinite(out["loss_sds"]) and rgb.grad.abs().sum() > 0
