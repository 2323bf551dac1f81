"""The SDS rule: its gradient on the render is exactly w(t) (eps_hat - eps)."""
import pytest
import torch

from framework.config import ConfigError
from models.guidance.cfg import classifier_free_guidance
from models.priors.base import DiffusionPrior
from models.guidance.rule import sds_weight, timestep_bounds
from models.guidance.sds import SDSGuidance, SDSGuidanceConfig


class FakePrior(DiffusionPrior):
    """Pixel-space prior with a known denoiser: eps_c = 0.3 x_t + 0.1, eps_u = -0.2 x_t."""

    def __init__(self):
        super().__init__()
        betas = torch.linspace(1e-4, 0.02, 1000)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)
        self.calls = []

    def encode(self, rgb):
        return rgb.permute(0, 3, 1, 2) * 2 - 1

    def predict_noise(self, x_t, t, condition, batch, need_uncond):
        self.calls.append(need_uncond)
        return 0.3 * x_t + 0.1, (-0.2 * x_t if need_uncond else None)


def make(scale=1.0, weighting="sds", grad_clip=None):
    cfg = SDSGuidanceConfig(guidance_scale=scale, weighting=weighting, grad_clip=grad_clip)
    return SDSGuidance(cfg, prior=FakePrior())


@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d"])
@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sds_gradient_on_latents_is_weighted_residual(weighting, scale):
    torch.manual_seed(0)
    guidance = make(scale, weighting)
    rgb = torch.rand(2, 8, 8, 3)
    z = guidance.prior.encode(rgb).detach().requires_grad_(True)
    guidance.prior.encode = lambda _: z  # differentiate w.r.t. the latents directly
    t = torch.tensor([100, 700])
    noise = torch.randn(2, 3, 8, 8)
    out = guidance(rgb, None, {}, t=t, noise=noise)
    out["loss_sds"].backward()

    abar = guidance.prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * noise
    eps_hat = classifier_free_guidance(-0.2 * z_t, 0.3 * z_t + 0.1, scale)
    expected = sds_weight(abar.flatten(), weighting).view(-1, 1, 1, 1) * (eps_hat - noise)
    # loss = 0.5 ||z - sg(z - grad)||^2 / B  =>  dL/dz = grad / B
    torch.testing.assert_close(z.grad, expected / 2, rtol=1e-5, atol=1e-6)
    assert guidance.prior.calls == [scale != 1.0]


def test_sds_gradient_reaches_the_render_through_encode():
    guidance = make()
    rgb = torch.rand(1, 4, 4, 3, requires_grad=True)
    t = torch.tensor([500])
    noise = torch.randn(1, 3, 4, 4)
    guidance(rgb, None, {}, t=t, noise=noise)["loss_sds"].backward()
    abar = guidance.prior.alphas_cumprod[t]
    z = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    z_t = abar.sqrt() * z + (1 - abar).sqrt() * noise
    grad_z = (1 - abar) * (0.3 * z_t + 0.1 - noise)
    torch.testing.assert_close(rgb.grad, 2 * grad_z.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_grad_clip_and_nan_to_num():
    guidance = make(grad_clip=0.01)
    z = torch.zeros(1, 3, 4, 4, requires_grad=True)
    guidance.prior.encode = lambda _: z
    guidance.prior.predict_noise = lambda *a: (torch.full((1, 3, 4, 4), float("nan")), None)
    guidance(torch.rand(1, 4, 4, 3), None, {})["loss_sds"].backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    guidance.prior.predict_noise = lambda *a: (torch.full((1, 3, 4, 4), 5.0), None)
    z.grad = None
    guidance(torch.rand(1, 4, 4, 3), None, {}, noise=torch.zeros(1, 3, 4, 4))["loss_sds"].backward()
    assert z.grad.abs().max() <= 0.01 + 1e-7


def test_timestep_range_follows_schedule():
    cfg = SDSGuidanceConfig(min_step_percent=0.02, max_step_percent=[[0, 0.98], [100, 0.5]])
    guidance = SDSGuidance(cfg, prior=FakePrior())
    assert (guidance.min_step, guidance.max_step) == (20, 980)
    guidance.update_step(100)
    assert (guidance.min_step, guidance.max_step) == (20, 500)
    with pytest.raises(ValueError):
        timestep_bounds(1000, 0.9, 0.1)


def test_guidance_scale_follows_schedule():
    """A CFG scale that falls over training: the prior is asked with the scale of the current step."""
    cfg = SDSGuidanceConfig(guidance_scale=[[0, 21.0], [500, 21.0], [1000, 10.0]])
    guidance = SDSGuidance(cfg, prior=FakePrior())
    rgb, t, noise = torch.rand(1, 4, 4, 3), torch.tensor([300]), torch.randn(1, 3, 4, 4)
    for step, scale in [(0, 21.0), (500, 21.0), (750, 15.5), (1000, 10.0), (5000, 10.0)]:
        guidance.update_step(step)
        assert guidance.guidance_scale == pytest.approx(scale)
        z = guidance.prior.encode(rgb)
        abar = guidance.prior.alphas_cumprod[t]
        z_t = abar.sqrt() * z + (1 - abar).sqrt() * noise
        expected = (1 - abar) * (classifier_free_guidance(-0.2 * z_t, 0.3 * z_t + 0.1, scale) - noise)
        out = guidance(rgb, None, {}, t=t, noise=noise)
        torch.testing.assert_close(out["grad_norm"], expected.norm(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="guidance_scale='high' is not allowed"):
        SDSGuidance(SDSGuidanceConfig(guidance_scale="high"), prior=FakePrior())


def test_cfg_formula():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert classifier_free_guidance(u, c, 1.0).item() == 3.0
    assert classifier_free_guidance(u, c, 0.0).item() == 1.0
    assert classifier_free_guidance(u, c, 7.5).item() == 1.0 + 7.5 * 2.0
