"""VSD on tiny random Stable Diffusion UNets (real diffusers classes, real peft LoRA), against
references built independently: the base UNet loaded afresh for the pretrained branch, and the
LoRA copy merged into a fresh UNet's weights (W + (alpha / r) B A) for the estimated branch."""
from __future__ import annotations

import copy

import pytest
import torch

from framework.config import ConfigError
from models.guidance.lora_copy import zero_cameras_with_probability
from models.guidance.rule import sds_weight
from models.guidance.vsd import VSDGuidance, VSDGuidanceConfig, lora_v_target
from models.priors.base import diffuse, v_to_eps
from models.priors.hf_loading import MissingWeightsError
from models.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig
from models.priors.tiny_pipelines import save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vsd")
    return {
        "eps": save_tiny_stable_diffusion(root / "eps"),
        "v": save_tiny_stable_diffusion(root / "v", prediction_type="v_prediction", seed=1),
        "v2": save_tiny_stable_diffusion(root / "v2", prediction_type="v_prediction", seed=2),
    }


def load_prior(folder) -> StableDiffusionPrior:
    return StableDiffusionPrior(StableDiffusionPriorConfig(pretrained_model_name_or_path=str(folder)))


def build(folders, prior_kind: str, lora_kind: str | None, **cfg) -> VSDGuidance:
    lora = None if lora_kind is None else str(folders[lora_kind])
    guidance = VSDGuidance(VSDGuidanceConfig(lora_model_name_or_path=lora, **cfg), prior=load_prior(folders[prior_kind]))
    g = torch.Generator().manual_seed(3)
    for p in guidance.trainable_parameters():  # a trained-looking LoRA: B != 0, so the copy differs from the prior
        p.data = torch.randn(p.shape, generator=g) * 0.3
    return guidance


def merged_reference(guidance: VSDGuidance, folder):
    """A fresh UNet from `folder` with the LoRA deltas merged into its weights and the camera embedding as class embedding."""
    unet = copy.deepcopy(load_prior(folder).unet)
    modules = dict(unet.named_modules())
    for name, module in guidance.lora_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            scale = module.lora_alpha["default"] / module.r["default"]
            modules[name].weight.data += scale * (b @ a)
    unet.class_embedding = copy.deepcopy(guidance.camera_embedding)
    return unet


def setup(guidance: VSDGuidance, b: int = 2):
    g = torch.Generator().manual_seed(0)
    dim = guidance.prior.unet.config.cross_attention_dim
    cond = {"text_embeddings": torch.randn(1, 77, dim, generator=g), "uncond_embeddings": torch.randn(1, 77, dim, generator=g)}
    c2w = torch.randn(b, 4, 4, generator=g)
    z = torch.randn(b, 4, 8, 8, generator=g).requires_grad_(True)
    t, noise = torch.tensor([300, 700][:b]), torch.randn(b, 4, 8, 8, generator=g)
    return cond, c2w, z, t, noise


@pytest.mark.parametrize(
    "prior_kind, lora_kind",
    [("eps", None), ("v", None), ("eps", "v")],
    ids=["one-model-eps", "one-model-v", "two-models-v-lora"],
)
def test_vsd_gradient_is_w_times_pretrained_minus_estimated(folders, prior_kind, lora_kind):
    guidance = build(folders, prior_kind, lora_kind)
    cond, c2w, z, t, noise = setup(guidance)
    guidance.prior.encode = lambda _: z
    guidance(torch.rand(2, 16, 16, 3), cond, {"c2w": c2w}, t=t, noise=noise)["loss_vsd"].backward()

    abar = guidance.prior.alphas_cumprod[t]
    z_t = diffuse(z.detach(), abar, noise)
    base = load_prior(folders[prior_kind])  # no adapter at all
    with torch.no_grad():
        e_c = base.eps_from_embeddings(z_t, t, cond["text_embeddings"].expand(2, -1, -1))
        e_u = base.eps_from_embeddings(z_t, t, cond["uncond_embeddings"].expand(2, -1, -1))
        eps_pre = e_u + 7.5 * (e_c - e_u)
        reference = merged_reference(guidance, folders[lora_kind or prior_kind])
        out = reference(z_t, t, encoder_hidden_states=cond["text_embeddings"].expand(2, -1, -1), class_labels=c2w.reshape(2, 16)).sample
        lora_is_v = (lora_kind or prior_kind) == "v"
        eps_est = v_to_eps(out, z_t, abar) if lora_is_v else out
    expected = sds_weight(abar, "sds").view(-1, 1, 1, 1) * (eps_pre - eps_est) / 2  # dL/dz = grad / B
    assert (eps_pre - eps_est).abs().max() > 1e-3  # the LoRA copy really differs from the prior
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-5)


def test_the_pretrained_branch_is_the_prior_itself_in_the_one_model_case(folders):
    guidance = build(folders, "eps", None)
    base = load_prior(folders["eps"])
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([400])
    emb = torch.randn(1, 77, base.unet.config.cross_attention_dim)
    with torch.no_grad():
        torch.testing.assert_close(guidance.prior.eps_from_embeddings(x, t, emb), base.eps_from_embeddings(x, t, emb))


@pytest.mark.parametrize("lora_kind, target", [(None, "eps"), ("v", "v")])
def test_lora_loss_is_the_mse_against_eps_or_v(folders, lora_kind, target):
    guidance = build(folders, "eps", lora_kind)
    cond, c2w, z, _, _ = setup(guidance)
    seen = {}

    def fake_output(x_t, t, text, cameras):
        seen.update(x_t=x_t, t=t, cameras=cameras)
        return torch.zeros_like(x_t)

    guidance.lora_output = fake_output
    torch.manual_seed(5)
    loss = guidance.lora_loss(z.detach(), cond["text_embeddings"].expand(2, -1, -1), c2w.reshape(2, 16))
    torch.manual_seed(5)
    t = torch.randint(0, 1000, (2,))
    noise = torch.randn_like(z)
    abar = guidance.lora_alphas_cumprod[t]
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["x_t"], diffuse(z.detach(), abar, noise))
    expected_target = noise if target == "eps" else abar.sqrt().view(-1, 1, 1, 1) * noise - (1 - abar).sqrt().view(-1, 1, 1, 1) * z.detach()
    torch.testing.assert_close(loss, (expected_target**2).mean())


def test_the_v_target_converts_back_to_the_noise():
    g = torch.Generator().manual_seed(1)
    z, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    abar = torch.tensor([0.9, 0.5, 0.05])
    v = lora_v_target(z, abar, noise)
    torch.testing.assert_close(v_to_eps(v, diffuse(z, abar, noise), abar), noise)


def test_camera_dropout_zeroes_whole_cameras_at_the_rate():
    cameras = torch.randn(20000, 16) + 3.0
    dropped = zero_cameras_with_probability(cameras, 0.1, generator=torch.Generator().manual_seed(0))
    zero_rows = (dropped == 0).all(dim=1)
    assert 0.09 < zero_rows.float().mean().item() < 0.11  # binomial sd 0.002
    assert torch.equal(dropped[~zero_rows], cameras[~zero_rows])


def test_only_the_lora_layers_and_the_camera_embedding_are_trainable(folders):
    guidance = build(folders, "eps", "v")
    trainable = {id(p) for p in guidance.trainable_parameters()}
    names = {n for n, p in guidance.named_parameters() if id(p) in trainable}
    assert names and all(".lora_A." in n or ".lora_B." in n or n.startswith("camera_embedding.") for n in names)
    assert any(n.startswith("camera_embedding.") for n in names)
    assert all(not p.requires_grad for n, p in guidance.named_parameters() if id(p) not in trainable)


def test_vsd_over_a_prior_without_a_unet_is_a_config_error():
    from models.priors.toy.exact_score import ToyExactScorePrior, ToyExactScorePriorConfig

    prior = ToyExactScorePrior(ToyExactScorePriorConfig(n_exemplars=8, supersample=1))
    with pytest.raises(ConfigError, match="system.guidance: VSD .* no UNet to adapt.*stable-diffusion, deep-floyd-if"):
        VSDGuidance(VSDGuidanceConfig(), prior=prior)


def test_a_missing_lora_model_names_its_key(folders, tmp_path):
    with pytest.raises(MissingWeightsError, match="system.guidance.lora_model_name_or_path"):
        VSDGuidance(VSDGuidanceConfig(lora_model_name_or_path=str(tmp_path / "nowhere")), prior=load_prior(folders["eps"]))
