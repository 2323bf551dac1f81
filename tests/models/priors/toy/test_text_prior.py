"""The text-to-image toy prior: its folder loads through the real IF loading code, its tokenizer
rejects words outside the toy vocabulary, and the shipped weights denoise toy renders."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig
from models.priors.hf_loading import PROJECT_ROOT
from models.priors.toy.dataset import ToyDatasetConfig, render_views
from models.priors.toy.text_prior import (
    TOY_VOCABULARY,
    ToyTextPriorArchitecture,
    build_text_to_image,
    save_text_to_image_folder,
    toy_tokenizer,
)
from models.prompt_processors.text import (
    DeepFloydIFPromptProcessor,
    DeepFloydIFPromptProcessorConfig,
    UnknownWordsError,
)

SHIPPED = PROJECT_ROOT / "models/priors/toy/weights/toy-text-to-image"
SMALL = ToyTextPriorArchitecture(sample_size=16, block_out_channels=[32, 32, 32], attention_head_dim=16, text_width=32)


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory) -> Path:
    return save_text_to_image_folder(tmp_path_factory.mktemp("toy-t2i"), build_text_to_image(SMALL))


def processor(folder: Path, prompt: str, tmp_path: Path) -> DeepFloydIFPromptProcessor:
    cfg = DeepFloydIFPromptProcessorConfig(prompt=prompt, pretrained_model_name_or_path=str(folder), cache_dir=str(tmp_path))
    return DeepFloydIFPromptProcessor(cfg)


def test_tokenizer_knows_the_toy_grammar_and_view_suffixes():
    tok = toy_tokenizer()
    for prompt in ["a orange cone on top of an blue torus.", "a red cube, backside view", ""]:
        assert tok.unk_token_id not in tok(prompt).input_ids, prompt
    assert set(TOY_VOCABULARY) >= {"purple", "torus", "overhead", "backside"}


def test_unknown_word_is_a_clear_error(random_folder, tmp_path):
    with pytest.raises(UnknownWordsError, match=r"does not know \['pink'\].*It knows: .*purple"):
        processor(random_folder, "a pink cube", tmp_path)


def test_random_folder_loads_through_the_if_code(random_folder, tmp_path):
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=str(random_folder)))
    pp = processor(random_folder, "a red cube", tmp_path)
    assert prior.image_size == 16 and pp.text.shape == (1, 77, 32)
    batch = {"elevation": torch.tensor([10.0]), "azimuth": torch.tensor([30.0])}
    x = prior.encode(torch.rand(1, 64, 64, 3))
    eps_c, eps_u = prior.predict_noise(x, torch.tensor([500]), pp(), batch, need_uncond=True)
    assert eps_c.shape == (1, 3, 16, 16) and not torch.allclose(eps_c, eps_u)


def test_a_relative_folder_resolves_against_the_project_root(tmp_path, monkeypatch):
    if not SHIPPED.is_dir():
        pytest.skip(f"the shipped prior {SHIPPED} is not in this checkout")
    monkeypatch.chdir(tmp_path)  # a run launched from elsewhere still finds the shipped prior
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path="models/priors/toy/weights/toy-text-to-image"))
    assert prior.image_size == 32


@pytest.mark.parametrize("prompt", ["a red cube", "a yellow sphere"])  # trained, held out
def test_shipped_prior_denoises_a_toy_render_at_moderate_noise(prompt, tmp_path):
    if not SHIPPED.is_dir():
        pytest.skip(f"the shipped prior {SHIPPED} is not in this checkout")
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=str(SHIPPED)))
    condition = processor(SHIPPED, prompt, tmp_path)()
    rgb = render_views(prompt, 8, ToyDatasetConfig(resolution=32), seed=7)
    x0 = prior.encode(rgb)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    t = torch.full((8,), 300)
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    batch = {"elevation": torch.full((8,), 20.0), "azimuth": torch.zeros(8)}
    with torch.no_grad():
        eps_hat, _ = prior.predict_noise(x_t, t, condition, batch, need_uncond=False)
    x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
    # the one-step estimate of x0 is much closer to the clean render than the noisy input is
    noisy_error = (x_t - x0).abs().mean()
    denoised_error = (x0_hat - x0).abs().mean()
    assert denoised_error < 0.5 * noisy_error, (float(denoised_error), float(noisy_error))
    assert (eps_hat - eps).square().mean() < 0.5 * eps.square().mean()
