"""StableDiffusionPrior through its real loading path, on a tiny random pipeline saved to disk."""
import time

import pytest
import torch

from framework.config import UserError
from models.guidance.cfg import classifier_free_guidance
from models.priors.base import v_to_eps
from models.guidance.rule import sds_weight
from models.guidance.sds import SDSGuidance, SDSGuidanceConfig
from models.priors.stable_diffusion import MissingWeightsError, StableDiffusionPrior, StableDiffusionPriorConfig
from models.priors.tiny_pipelines import TEXT_WIDTH, save_tiny_stable_diffusion

D = TEXT_WIDTH  # cross-attention (text embedding) width of the tiny UNet


def save_tiny_pipeline(root, prediction_type="epsilon"):
    return save_tiny_stable_diffusion(root, prediction_type=prediction_type)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def prior(tiny_dir):
    return StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_dir)))


def condition(batch=1):
    g = torch.Generator().manual_seed(1)
    return {"text_embeddings": torch.randn(batch, 5, D, generator=g), "uncond_embeddings": torch.randn(1, 5, D, generator=g)}


def test_loaded_frozen_with_schedule(prior):
    assert prior.image_size == 16 and prior.latent_size == 8  # derived from the tiny configs
    assert all(not p.requires_grad for p in prior.parameters())
    assert not prior.unet.training and not prior.vae.training
    prior.train()
    assert not prior.unet.training and not prior.vae.training
    assert prior.num_train_timesteps == 1000
    assert "alphas_cumprod" not in prior.state_dict()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    torch.testing.assert_close(prior.alphas_cumprod, torch.cumprod(1 - betas, 0))
    assert prior.weights_dtype == torch.float32  # CPU: never fp16


def test_encode_decode_shapes(prior):
    torch.manual_seed(0)
    z = prior.encode(torch.rand(2, 20, 24, 3))
    assert z.shape == (2, 4, 8, 8)
    rgb = prior.decode(z)
    assert rgb.shape == (2, 16, 16, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_encode_matches_the_vae_by_hand(prior):
    rgb = torch.rand(2, 16, 16, 3)  # already at the prior's image size: no resize
    torch.manual_seed(3)
    z = prior.encode(rgb)
    torch.manual_seed(3)
    with torch.no_grad():
        dist = prior.vae.encode(rgb.permute(0, 3, 1, 2) * 2 - 1).latent_dist
        expected = dist.sample() * prior.vae.config.scaling_factor
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)


def test_vae_chunks_match_whole_batch(tiny_dir, prior):
    chunked = StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_dir), vae_chunk_size=1))
    z = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(chunked.decode(z), prior.decode(z), rtol=1e-4, atol=1e-5)


def test_rgb_as_latents(tiny_dir):
    p = StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_dir), rgb_as_latents=True))
    lat = torch.randn(1, 8, 8, 4)
    torch.testing.assert_close(p.encode(lat), lat.permute(0, 3, 1, 2))
    assert p.encode(torch.randn(2, 32, 32, 4)).shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="4-channel"):
        p.encode(torch.rand(1, 8, 8, 3))


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sds_gradient_on_latents(prior, scale):
    torch.manual_seed(0)
    guidance = SDSGuidance(SDSGuidanceConfig(guidance_scale=scale), prior=prior)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    original_encode = prior.encode
    prior.encode = lambda _: z  # differentiate w.r.t. the latents directly
    try:
        cond = condition(2)
        t = torch.tensor([100, 700])
        noise = torch.randn(2, 4, 8, 8)
        guidance(torch.rand(2, 16, 16, 3), cond, {}, t=t, noise=noise)["loss_sds"].backward()
    finally:
        del prior.encode
    assert prior.encode == original_encode

    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * noise
    with torch.no_grad():  # the UNet called independently, one forward per branch
        eps_c = prior.unet(z_t, t, encoder_hidden_states=cond["text_embeddings"]).sample
        eps_u = prior.unet(z_t, t, encoder_hidden_states=cond["uncond_embeddings"].expand(2, -1, -1)).sample
    eps_hat = classifier_free_guidance(eps_u, eps_c, scale)
    expected = sds_weight(abar.flatten(), "sds").view(-1, 1, 1, 1) * (eps_hat - noise) / 2
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-5)


def test_sds_gradient_reaches_rgb_through_the_vae(prior):
    torch.manual_seed(0)
    guidance = SDSGuidance(SDSGuidanceConfig(guidance_scale=7.5), prior=prior)
    rgb = torch.rand(1, 12, 12, 3, requires_grad=True)
    guidance(rgb, condition(), {}, t=torch.tensor([500]))["loss_sds"].backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_predict_noise_batches_cond_and_uncond_in_one_forward(prior):
    calls = []
    hook = prior.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        x_t = torch.randn(3, 4, 8, 8)
        t = torch.tensor([10, 20, 30])
        eps_c, eps_u = prior.predict_noise(x_t, t, condition(1), {}, need_uncond=True)
        assert eps_c.shape == eps_u.shape == (3, 4, 8, 8)
        eps_only, none = prior.predict_noise(x_t, t, condition(1), {}, need_uncond=False)
        assert none is None
        torch.testing.assert_close(eps_only, eps_c, rtol=1e-4, atol=1e-5)
    finally:
        hook.remove()
    assert calls == [6, 3]
    with pytest.raises(ValueError, match="uncond_embeddings"):
        prior.predict_noise(x_t, t, {"text_embeddings": torch.randn(1, 5, D)}, {}, need_uncond=True)


def test_v_to_eps_hand_made():
    # x_0 = 1, eps = 2, abar = 0.64: x_t = 0.8 + 0.6*2 = 2.0, v = 0.8*2 - 0.6*1 = 1.0
    v = torch.full((1, 1, 1, 1), 1.0)
    x_t = torch.full((1, 1, 1, 1), 2.0)
    eps = v_to_eps(v, x_t, torch.tensor([0.64]))
    torch.testing.assert_close(eps, torch.full((1, 1, 1, 1), 2.0))


def test_v_prediction_checkpoint_returns_eps(tmp_path):
    root = save_tiny_pipeline(tmp_path, prediction_type="v_prediction")
    prior = StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(root)))
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 900])
    cond = condition(2)
    eps_c, _ = prior.predict_noise(x_t, t, cond, {}, need_uncond=False)
    with torch.no_grad():
        v = prior.unet(x_t, t, encoder_hidden_states=cond["text_embeddings"]).sample
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(eps_c, abar.sqrt() * v + (1 - abar).sqrt() * x_t, rtol=1e-4, atol=1e-5)


def _assert_fast_missing(cfg, needle):
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        StableDiffusionPrior(cfg)
    assert time.perf_counter() - start < 10.0
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert needle in message and "local" in message
    assert "hf download" in message and "pretrained_model_name_or_path=" in message
    return message


def test_missing_local_folder(tmp_path):
    missing = str(tmp_path / "no_such_model")
    _assert_fast_missing(StableDiffusionPriorConfig(pretrained_model_name_or_path=missing), missing)


def test_folder_without_weights(tmp_path):
    (tmp_path / "unet").mkdir()
    _assert_fast_missing(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tmp_path)), str(tmp_path))


def test_unknown_hub_id_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # Only the env var: the prior must honour it at call time even with local_files_only=False.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nobody-here/no-such-diffusion-model"
    cfg = StableDiffusionPriorConfig(pretrained_model_name_or_path=name, local_files_only=False)
    message = _assert_fast_missing(cfg, name)
    assert constants.HF_HUB_CACHE in message


def test_unknown_hub_id_default_config_is_offline():
    name = "nobody-here/another-missing-model"
    _assert_fast_missing(StableDiffusionPriorConfig(pretrained_model_name_or_path=name), name)


def test_attention_is_sdpa_unless_sliced(tiny_dir, prior):
    """Default processors call F.scaled_dot_product_attention (flash / memory-efficient kernels on CUDA);
    attention slicing swaps them for the sliced processor (less memory)."""
    assert {type(p).__name__ for p in prior.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    sliced = StableDiffusionPrior(
        StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_dir), enable_attention_slicing=True)
    )
    assert {type(p).__name__ for p in sliced.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    x_t, t = torch.randn(1, 4, 8, 8), torch.tensor([300])
    a, _ = prior.predict_noise(x_t, t, condition(1), {}, need_uncond=False)
    b, _ = sliced.predict_noise(x_t, t, condition(1), {}, need_uncond=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_loading_says_which_weights(tiny_dir, capsys):
    StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(tiny_dir)))
    told = capsys.readouterr().err
    assert f"loading Stable Diffusion unet/ from {tiny_dir}" in told and "vae/" in told
    assert "scheduler/" not in told  # a scheduler's config loads silently
