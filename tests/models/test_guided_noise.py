"""guided_noise: plain CFG, and Perp-Neg from a TextCondition, against the formulas written out by hand."""
import math

import pytest
import torch

from models.guidance.cfg import guided_noise
from models.guidance.rule import sds_weight
from models.guidance.sds import SDSGuidance, SDSGuidanceConfig
from models.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig
from models.priors.text_conditioned import TextConditionedPrior
from models.prompt_processors.text import StableDiffusionPromptProcessor, StableDiffusionPromptProcessorConfig
from models.prompt_processors.text_condition import TextCondition
from models.prompt_processors.view_dependent import BACK, FRONT, OVERHEAD, SIDE


class FakeTextPrior(TextConditionedPrior):
    """eps = a(emb) x_t + b(emb): a different, known prediction for every embedding."""

    def __init__(self):
        super().__init__()
        self.alphas_cumprod = torch.linspace(0.99, 0.01, 1000)
        self.calls = []

    def eps_from_embeddings(self, x_t, t, embeddings):
        self.calls.append(x_t.shape[0])
        a = embeddings[:, :, 0].mean(1).view(-1, 1, 1, 1)
        b = embeddings[:, 0, 1].view(-1, 1, 1, 1)
        return a * x_t + b


def fake_eps(x_t, emb):  # emb (L, D) -> the fake prior's prediction for one sample
    return emb[:, 0].mean() * x_t + emb[0, 1]


def condition(perp_neg):
    g = torch.Generator().manual_seed(0)
    return TextCondition(
        prompt="p",
        text=torch.randn(1, 3, 4, generator=g),
        uncond=torch.randn(1, 3, 4, generator=g),
        text_views=torch.randn(4, 3, 4, generator=g),
        use_perp_neg=perp_neg,
    )


def f(params, r):
    a, b, c = params
    return a * math.exp(-b * r) + c


def perp(a, b):
    return a - (a * b).sum() / (b * b).sum() * b


def test_cfg_path_uses_the_view_prompt():
    prior, cond = FakeTextPrior(), condition(False)
    x_t = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    batch = {"elevation": torch.tensor([10.0, 10.0]), "azimuth": torch.tensor([0.0, 170.0])}
    eps = guided_noise(prior, x_t, torch.tensor([5, 6]), cond, batch, 7.5)
    for i, view in enumerate([FRONT, BACK]):
        e_c, e_u = fake_eps(x_t[i], cond.text_views[view]), fake_eps(x_t[i], cond.uncond[0])
        torch.testing.assert_close(eps[i], e_u + 7.5 * (e_c - e_u))
    assert prior.calls == [4]  # one batched forward: [cond, uncond]


@pytest.mark.parametrize("azimuth", [0.0, 30.0, -60.0, 90.0, 120.0, -170.0])
def test_perp_neg_matches_the_published_formula(azimuth):
    prior, cond = FakeTextPrior(), condition(True)
    x_t = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    s = 7.5
    batch = {"elevation": torch.tensor([20.0]), "azimuth": torch.tensor([azimuth])}
    eps = guided_noise(prior, x_t, torch.tensor([5]), cond, batch, s)

    front, side, back = (cond.text_views[v] for v in (FRONT, SIDE, BACK))
    az = abs(azimuth)
    if az < 90:  # front half: r front + (1-r) side; push from [front, side]
        r = 1 - az / 90
        pos = r * front + (1 - r) * side
        negs, weights = [front, side], [-f((4, 0.5, -2.426), r), -f((4, 0.5, -2.426), 1 - r)]
    else:  # back half: r side + (1-r) back; push from [side, front]
        r = 2 - az / 90
        pos = r * side + (1 - r) * back
        negs, weights = [side, front], [-f((1, 0.5, -0.606), r), -f((1, 0.5, 0.967), r)]
    e_u = fake_eps(x_t[0], cond.uncond[0])
    e_pos = fake_eps(x_t[0], pos) - e_u
    expected = e_u + s * (e_pos + sum(w * perp(fake_eps(x_t[0], n) - e_u, e_pos) for w, n in zip(weights, negs)))
    # float32 rounding: the perp projection divides by ||e_pos||^2 and the scale multiplies by 7.5
    torch.testing.assert_close(eps[0], expected, rtol=1e-4, atol=1e-4)
    assert prior.calls == [4]  # [pos, uncond, neg_1, neg_2] in one forward


@pytest.mark.parametrize("azimuth", [0.0, 120.0])
def test_perp_neg_overhead_is_cfg_on_the_overhead_prompt(azimuth):
    """threestudio: an overhead view's positive is the overhead embedding, its negatives weigh 0."""
    prior, cond = FakeTextPrior(), condition(True)
    x_t = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    batch = {"elevation": torch.tensor([75.0]), "azimuth": torch.tensor([azimuth])}
    eps = guided_noise(prior, x_t, torch.tensor([5]), cond, batch, 5.0)
    e_u, e_c = fake_eps(x_t[0], cond.uncond[0]), fake_eps(x_t[0], cond.text_views[OVERHEAD])
    torch.testing.assert_close(eps[0], e_u + 5.0 * (e_c - e_u), rtol=1e-4, atol=1e-5)


def test_perp_neg_needs_a_text_prior():
    from models.priors.base import DiffusionPrior

    with pytest.raises(ValueError, match="text-conditioned prior"):
        guided_noise(DiffusionPrior(), torch.zeros(1, 3, 2, 2), torch.tensor([1]), condition(True), {}, 2.0)


def test_sds_with_perp_neg_on_tiny_stable_diffusion(tiny_sd_dir, tmp_path):
    """End to end: prompt processor (use_perp_neg) -> SDS -> gradient on the latents, checked by hand."""
    prior = StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_sd_dir)))
    processor = StableDiffusionPromptProcessor(
        StableDiffusionPromptProcessorConfig(
            prompt="a red cube", pretrained_model_name_or_path=str(tiny_sd_dir), cache_dir=str(tmp_path), use_perp_neg=True
        )
    )
    guidance = SDSGuidance(SDSGuidanceConfig(guidance_scale=7.5), prior=prior)
    torch.manual_seed(0)
    z = torch.randn(1, 4, 8, 8, requires_grad=True)
    prior.encode = lambda _: z
    try:
        t, noise = torch.tensor([400]), torch.randn(1, 4, 8, 8)
        batch = {"elevation": torch.tensor([15.0]), "azimuth": torch.tensor([60.0])}
        guidance(torch.rand(1, 16, 16, 3), processor(), batch, t=t, noise=noise)["loss_sds"].backward()
    finally:
        del prior.encode
    abar = prior.alphas_cumprod[t]
    z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * noise

    def unet(emb):
        with torch.no_grad():
            return prior.unet(z_t, t, encoder_hidden_states=emb[None]).sample[0]

    views = processor.text_views
    r = 1 - 60.0 / 90
    e_u = unet(processor.uncond[0])
    e_pos = unet(r * views[FRONT] + (1 - r) * views[SIDE]) - e_u
    neg = -f((4, 0.5, -2.426), r) * perp(unet(views[FRONT]) - e_u, e_pos) - f((4, 0.5, -2.426), 1 - r) * perp(
        unet(views[SIDE]) - e_u, e_pos
    )
    eps_hat = e_u + 7.5 * (e_pos + neg)
    expected = sds_weight(abar, "sds") * (eps_hat - noise[0])
    torch.testing.assert_close(z.grad[0], expected, rtol=1e-3, atol=1e-4)
