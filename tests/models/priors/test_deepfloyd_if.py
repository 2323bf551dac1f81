"""DeepFloydIFPrior through its real loading path, on a tiny random IF stage-I folder saved to disk."""
import time

import pytest
import torch
import torch.nn.functional as F

from framework.config import UserError
from models.guidance.cfg import classifier_free_guidance
from models.guidance.rule import sds_weight
from models.guidance.sds import SDSGuidance, SDSGuidanceConfig
from models.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig
from models.priors.hf_loading import MissingWeightsError
from models.priors.tiny_pipelines import TEXT_WIDTH


@pytest.fixture(scope="module")
def prior(tiny_if_dir):
    return DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=str(tiny_if_dir)))


def embeddings(batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "text_embeddings": torch.randn(batch, 7, TEXT_WIDTH, generator=g),
        "uncond_embeddings": torch.randn(1, 7, TEXT_WIDTH, generator=g),
    }


def test_loaded_frozen_with_its_cosine_schedule(prior):
    from diffusers import DDPMScheduler

    assert prior.image_size == 16 and prior.channels == 3
    assert all(not p.requires_grad for p in prior.parameters())
    prior.train()
    assert not prior.unet.training
    assert "alphas_cumprod" not in prior.state_dict()
    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
    torch.testing.assert_close(prior.alphas_cumprod, reference.float())
    assert prior.weights_dtype == torch.float32


def test_encode_is_resized_pixels_in_minus_one_one(prior):
    rgb = torch.rand(2, 24, 24, 3)
    x = prior.encode(rgb)
    expected = F.interpolate(rgb.permute(0, 3, 1, 2), (16, 16), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(prior.decode(x), (expected.permute(0, 2, 3, 1) + 1) / 2)


def test_eps_is_the_first_three_of_six_channels(prior):
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([20, 700])
    cond = embeddings(2)
    eps_c, eps_u = prior.predict_noise(x_t, t, cond, {}, need_uncond=True)
    with torch.no_grad():
        full = prior.unet(x_t, t, encoder_hidden_states=cond["text_embeddings"]).sample
    assert full.shape[1] == 6 and eps_c.shape == (2, 3, 16, 16) and eps_u.shape == eps_c.shape
    torch.testing.assert_close(eps_c, full[:, :3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 21.0])
def test_sds_gradient_on_pixels(prior, scale):
    """dL/dx = w(t)(eps_hat - eps) / B on IF's pixel input, for a fixed t and noise."""
    torch.manual_seed(0)
    guidance = SDSGuidance(SDSGuidanceConfig(guidance_scale=scale), prior=prior)
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)  # at the UNet size: encode is 2 rgb - 1
    t = torch.tensor([150, 800])
    noise = torch.randn(2, 3, 16, 16)
    cond = embeddings(2)
    guidance(rgb, cond, {}, t=t, noise=noise)["loss_sds"].backward()

    x = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    with torch.no_grad():  # each branch through the UNet on its own
        eps_c = prior.unet(x_t, t, encoder_hidden_states=cond["text_embeddings"]).sample[:, :3]
        eps_u = prior.unet(x_t, t, encoder_hidden_states=cond["uncond_embeddings"].expand(2, -1, -1)).sample[:, :3]
    grad_x = sds_weight(abar.flatten(), "sds").view(-1, 1, 1, 1) * (classifier_free_guidance(eps_u, eps_c, scale) - noise) / 2
    expected = (grad_x * 2).permute(0, 2, 3, 1)  # chain rule through x = 2 rgb - 1
    assert expected.abs().max() > 1e-3
    # A scale of 21 multiplies the float32 difference between the batched and the separate forwards.
    torch.testing.assert_close(rgb.grad, expected, rtol=1e-3, atol=1e-5 * scale)


def test_missing_weights_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nobody-here/no-such-if-model"
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=name, local_files_only=False))
    assert time.perf_counter() - start < 10.0
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "DeepFloyd IF" in message and name in message and "hf download" in message
    assert "system.guidance.prior.pretrained_model_name_or_path=" in message


def test_missing_weights_local_folder(tmp_path):
    with pytest.raises(MissingWeightsError, match="no such directory"):
        DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=str(tmp_path / "missing")))


def test_attention_is_sdpa(prior):
    assert {type(p).__name__ for p in prior.unet.attn_processors.values()} == {"AttnAddedKVProcessor2_0"}
