"""The SJC rule: its gradient is the paper's PAAS formula (n = 1 and n > 1), averaging draws
lowers its variance (measured), its sigma matches the DDPM scheduler, and the emptiness prior."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from framework.regularisers import REGULARISERS, emptiness_loss
from models.guidance.cfg import classifier_free_guidance
from models.priors.base import DiffusionPrior
from models.guidance.sjc import SJCGuidance, SJCGuidanceConfig, repeat_draws, ve_sigma


def scaled_linear_alphas_cumprod() -> torch.Tensor:
    """Stable Diffusion's schedule: betas linear in sqrt space from 0.00085 to 0.012, T = 1000."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


class FakePrior(DiffusionPrior):
    """Pixel-space prior with a known, nonlinear denoiser:
    eps_c = tanh(0.7 x_t) + 0.1, eps_u = -0.2 x_t. Records what it was asked."""

    def __init__(self):
        super().__init__()
        self.register_buffer("alphas_cumprod", scaled_linear_alphas_cumprod(), persistent=False)
        self.inputs: list[torch.Tensor] = []

    def encode(self, rgb):
        return rgb.permute(0, 3, 1, 2) * 2 - 1

    def predict_noise(self, x_t, t, condition, batch, need_uncond):
        assert t.shape == (x_t.shape[0],)
        if "c2w" in batch:  # per-image batch entries were repeated along with the draws
            assert batch["c2w"].shape[0] == x_t.shape[0]
        self.inputs.append(x_t.clone())
        return torch.tanh(0.7 * x_t) + 0.1, (-0.2 * x_t if need_uncond else None)


def make(**kw) -> SJCGuidance:
    return SJCGuidance(SJCGuidanceConfig(**kw), prior=FakePrior())


def paper_gradient(y, t, noise, abar_table, scale, var_red):
    """The paper's formula spelled out draw by draw: sigma = sqrt((1 - abar) / abar), z = y + sigma n,
    D = z - sigma eps_hat(z / sqrt(1 + sigma^2)), grad = -mean_k (D_k - ref_k) / sigma."""
    total = torch.zeros_like(y)
    k = noise.shape[1]
    for b in range(y.shape[0]):
        abar = abar_table[t[b]].double()
        sigma = torch.sqrt((1 - abar) / abar)
        for j in range(k):
            z = y[b].double() + sigma * noise[b, j].double()
            x_in = z / torch.sqrt(1 + sigma**2)
            eps = classifier_free_guidance(-0.2 * x_in, torch.tanh(0.7 * x_in) + 0.1, scale)
            denoised = z - sigma * eps
            ref = y[b].double() if var_red else z
            total[b] += (-(denoised - ref) / sigma / k).float()
    return total


@pytest.mark.parametrize("n_samples", [1, 3])
@pytest.mark.parametrize("var_red", [True, False])
@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_gradient_equals_paper_formula(n_samples, var_red, scale):
    torch.manual_seed(0)
    guidance = make(n_samples=n_samples, var_red=var_red, guidance_scale=scale)
    rgb = torch.rand(2, 6, 6, 3)
    y = guidance.prior.encode(rgb).detach().requires_grad_(True)
    guidance.prior.encode = lambda _: y  # differentiate w.r.t. the prior-space render directly
    t = torch.tensor([30, 800])
    noise = torch.randn(2, n_samples, 3, 6, 6)
    out = guidance(rgb, None, {"c2w": torch.eye(4).expand(2, 4, 4)}, t=t, noise=noise)
    out["loss_sds"].backward()
    expected = paper_gradient(y.detach(), t, noise, guidance.prior.alphas_cumprod, scale, var_red)
    # loss = 0.5 ||y - sg(y - grad)||^2 / B  =>  dL/dy = grad / B
    torch.testing.assert_close(y.grad, expected / 2, rtol=1e-4, atol=1e-5)
    # closed forms: with variance reduction grad = mean_k (eps_hat_k - n_k), without it mean_k eps_hat_k
    abar = guidance.prior.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    x_t = abar.sqrt() * y.detach()[:, None] + (1 - abar).sqrt() * noise
    eps = classifier_free_guidance(-0.2 * x_t, torch.tanh(0.7 * x_t) + 0.1, scale)
    closed = (eps - noise if var_red else eps).mean(1)
    torch.testing.assert_close(y.grad, closed / 2, rtol=1e-4, atol=1e-5)
    assert len(guidance.prior.inputs) == 1 and guidance.prior.inputs[0].shape == (2 * n_samples, 3, 6, 6)


def test_draws_are_chunked_by_max_batch_with_the_same_result():
    torch.manual_seed(1)
    y = torch.randn(2, 3, 4, 4)
    t = torch.tensor([100, 600])
    noise = torch.randn(2, 5, 3, 4, 4)
    batch = {"c2w": torch.eye(4).expand(2, 4, 4), "height": 4}
    one = make(n_samples=5)
    chunked = make(n_samples=5, max_batch=4)  # 2 images -> 2 draws per call -> 3 calls
    g1 = one.paas_gradient(y, t, noise, None, batch)
    g2 = chunked.paas_gradient(y, t, noise, None, batch)
    torch.testing.assert_close(g1, g2)
    assert [x.shape[0] for x in chunked.prior.inputs] == [4, 4, 2]


def test_prior_input_is_the_ddpm_x_t_of_diffusers_scheduler():
    """sigma = sqrt((1 - abar) / abar) with abar from DDPMScheduler(scaled_linear, 0.00085-0.012), and
    z / sqrt(1 + sigma^2) is exactly the scheduler's own add_noise(y, n, t)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    abar = scheduler.alphas_cumprod.float()
    torch.testing.assert_close(abar, scaled_linear_alphas_cumprod(), rtol=1e-5, atol=1e-7)
    t = torch.tensor([10, 250, 500, 970])
    sigma = ve_sigma(abar[t])
    torch.testing.assert_close(sigma, ((1 - abar[t]) / abar[t]).sqrt())
    torch.testing.assert_close(1.0 / (1.0 + sigma**2), abar[t], rtol=1e-5, atol=1e-7)  # 1 + sigma^2 = 1 / abar
    guidance = make()
    torch.manual_seed(2)
    y = torch.randn(4, 3, 4, 4)
    noise = torch.randn(4, 1, 3, 4, 4)
    guidance.paas_gradient(y, t, noise, None, {})
    expected = scheduler.add_noise(y, noise[:, 0], t)
    torch.testing.assert_close(guidance.prior.inputs[0], expected, rtol=1e-5, atol=1e-5)


def test_averaging_draws_lowers_the_variance_of_the_gradient():
    """Across seeds, the K = 8 PAAS estimate varies far less than the single-draw one (measured)."""
    y = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)
    t = torch.tensor([400])
    guidance = {k: make(n_samples=k, guidance_scale=1.0) for k in (1, 8)}
    grads = {k: [] for k in guidance}
    for seed in range(200):
        for k, g in guidance.items():
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(1, k, 3, 8, 8, generator=gen)
            grads[k].append(g.paas_gradient(y, t, noise, None, {}))
    var = {k: torch.stack(v).var(dim=0).mean().item() for k, v in grads.items()}
    means = {k: torch.stack(v).mean(dim=0) for k, v in grads.items()}
    assert var[8] < 0.25 * var[1], var  # independent draws: about 1/8 expected
    assert var[8] > 0.0
    # same expectation: the means differ by no more than a few standard errors
    standard_error = (var[1] / 200) ** 0.5
    assert (means[8] - means[1]).abs().mean() < 3 * standard_error, (means[8] - means[1]).abs().mean()


def test_timestep_range_and_validation():
    guidance = make(min_step_percent=0.01, max_step_percent=0.97)
    assert (guidance.min_step, guidance.max_step) == (10, 970)
    out = guidance(torch.rand(3, 4, 4, 3), None, {})
    assert 10 <= out["t_mean"] <= 970 and out["sigma_mean"] > 0 and torch.isfinite(out["loss_sds"])
    scheduled = make(guidance_scale=[[0, 101.0], [100, 11.0]])
    scheduled.update_step(50)
    assert scheduled.guidance_scale == pytest.approx(56.0)
    with pytest.raises(ValueError, match="n_samples"):
        make(n_samples=0)
    with pytest.raises(ValueError, match="noise must be"):
        make(n_samples=2)(torch.rand(1, 4, 4, 3), None, {}, noise=torch.randn(1, 3, 4, 4))


def test_repeat_draws_repeats_per_image_tensors_only():
    batch = {"c2w": torch.arange(2).view(2, 1), "height": 64, "nested": {"fovy": torch.tensor([1.0, 2.0])}, "one": torch.ones(1)}
    out = repeat_draws(batch, 2, 3)
    assert out["c2w"].flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert out["nested"]["fovy"].tolist() == [1, 1, 1, 2, 2, 2]
    assert out["height"] == 64 and out["one"].shape == (1,)
    assert repeat_draws(batch, 2, 1) is batch


def test_emptiness_loss_is_mean_log1p_of_scaled_weights():
    w = torch.tensor([[0.0], [0.1], [0.5], [1.0]])
    expected = torch.log(1 + 10 * w).mean()
    torch.testing.assert_close(emptiness_loss({"weights": w}), expected)
    torch.testing.assert_close(emptiness_loss({"weights": w}, scale=3.0), torch.log(1 + 3 * w).mean())
    assert REGULARISERS["emptiness"]({"weights": w}) == expected
    assert emptiness_loss({"weights": torch.zeros(0, 1)}) == 0  # everything pruned: zero, not NaN
