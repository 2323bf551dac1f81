"""SD (CLIP) and IF (T5) prompt processors through the real loading code, on tiny saved pipelines."""
import gc
import shutil
import time
import weakref

import pytest
import torch

from framework.config import ConfigError
from models.priors.hf_loading import MissingWeightsError
from models.prompt_processors.text import (
    DeepFloydIFPromptProcessor,
    DeepFloydIFPromptProcessorConfig,
    StableDiffusionPromptProcessor,
    StableDiffusionPromptProcessorConfig,
)
from models.prompt_processors.view_dependent import BACK, BACK_SIDE, FRONT, FRONT_SIDE, OVERHEAD, SIDE


def sd(tiny_sd_dir, cache_dir, **kw):
    cfg = StableDiffusionPromptProcessorConfig(
        prompt="a red cube", pretrained_model_name_or_path=str(tiny_sd_dir), cache_dir=str(cache_dir), **kw
    )
    return StableDiffusionPromptProcessor(cfg)


def direct_clip(folder, prompts):
    from transformers import AutoTokenizer, CLIPTextModel

    tok = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids).last_hidden_state


def test_sd_embeddings_are_clip_hidden_states(tiny_sd_dir, tmp_path):
    p = sd(tiny_sd_dir, tmp_path, negative_prompt="blurry")
    c = p()
    views = ["a red cube, side view", "a red cube, front view", "a red cube, backside view", "a red cube, overhead view"]
    expected = direct_clip(str(tiny_sd_dir), ["a red cube", "blurry", *views])
    assert c.text.shape == (1, 77, 32) and c.text_views.shape == (4, 77, 32)
    torch.testing.assert_close(c.text[0], expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.uncond[0], expected[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.text_views, expected[2:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(c.text_views[FRONT], c.text_views[BACK])


def test_if_embeddings_are_t5_hidden_states_with_mask(tiny_if_dir, tmp_path):
    from transformers import AutoTokenizer, T5EncoderModel

    cfg = DeepFloydIFPromptProcessorConfig(prompt="a blue torus", pretrained_model_name_or_path=str(tiny_if_dir), use_cache=False)
    c = DeepFloydIFPromptProcessor(cfg)()
    tok = AutoTokenizer.from_pretrained(str(tiny_if_dir), subfolder="tokenizer")
    enc = T5EncoderModel.from_pretrained(str(tiny_if_dir), subfolder="text_encoder")
    t = tok(["a blue torus", ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = enc(t.input_ids, attention_mask=t.attention_mask).last_hidden_state
    torch.testing.assert_close(c.text[0], expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.uncond[0], expected[1], rtol=1e-4, atol=1e-5)


def test_cache_is_hit_on_the_second_run_and_the_encoder_is_not_loaded(tiny_sd_dir, tmp_path, monkeypatch):
    first = sd(tiny_sd_dir, tmp_path)
    assert first.encoder_loads == 1 and first.cache.misses == 6 and first.cache.hits == 0

    def must_not_load(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although every embedding was cached")

    monkeypatch.setattr(StableDiffusionPromptProcessor, "load_text_encoder", must_not_load)
    second = sd(tiny_sd_dir, tmp_path)
    assert second.encoder_loads == 0 and second.cache.hits == 6 and second.cache.misses == 0
    torch.testing.assert_close(second.text_views, first.text_views)
    # A new prompt is a miss again (and would need the encoder).
    with pytest.raises(AssertionError, match="was loaded"):
        StableDiffusionPromptProcessor(
            StableDiffusionPromptProcessorConfig(
                prompt="a green cone", pretrained_model_name_or_path=str(tiny_sd_dir), cache_dir=str(tmp_path)
            )
        )


def test_encoder_saved_over_its_folder_is_not_served_from_the_cache(tiny_sd_dir, tmp_path):
    """A prior retrained into the same folder (as the toy priors are) must not get the old encoder's
    embeddings from the cache: the key follows the text encoder's files, not only the path."""
    from transformers import CLIPTextModel

    folder = tmp_path / "prior"
    shutil.copytree(tiny_sd_dir, folder)
    cache = tmp_path / "cache"
    old = sd(folder, cache).text_views
    encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    with torch.no_grad():
        for w in encoder.parameters():
            w.add_(0.1 * torch.randn_like(w))
    encoder.save_pretrained(folder / "text_encoder")  # "retrained", saved over the old weights

    again = sd(folder, cache)
    assert again.encoder_loads == 1 and again.cache.hits == 0
    torch.testing.assert_close(again.text_views, direct_clip(str(folder), again.view_texts), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(again.text_views, old)
    # files unchanged since: the cache is hit
    assert sd(folder, cache).cache.hits == 6


def test_text_encoder_is_freed_after_embedding(tiny_sd_dir, tmp_path, monkeypatch):
    refs = []
    original = StableDiffusionPromptProcessor.load_text_encoder

    def spy(self, source, dtype):
        tokenizer, encoder = original(self, source, dtype)
        refs.append(weakref.ref(encoder))
        return tokenizer, encoder

    monkeypatch.setattr(StableDiffusionPromptProcessor, "load_text_encoder", spy)
    p = sd(tiny_sd_dir, tmp_path, use_cache=False)
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None
    assert not any("CLIP" in type(m).__name__ for m in p.modules())
    assert {n for n, _ in p.named_buffers()} == {"text", "uncond", "text_views"}
    assert p.state_dict() == {}  # nothing of the encoder (or the embeddings) goes into checkpoints


@pytest.mark.parametrize(
    "elevation, azimuth, view",
    [
        (0.0, 44.9, FRONT),
        (0.0, -44.9, FRONT),
        (0.0, 45.0, SIDE),
        (0.0, 135.0, SIDE),
        (0.0, 135.1, BACK),
        (0.0, -180.0, BACK),
        (60.0, 0.0, FRONT),
        (60.1, 0.0, OVERHEAD),
        (60.1, 180.0, OVERHEAD),
    ],
)
def test_view_dependent_rows_at_the_threshold_angles(tiny_sd_dir, tmp_path_factory, elevation, azimuth, view):
    p = sd(tiny_sd_dir, tmp_path_factory.mktemp("c"))
    batch = {"elevation": torch.tensor([elevation]), "azimuth": torch.tensor([azimuth])}
    out = p().for_batch(batch)
    torch.testing.assert_close(out["text_embeddings"][0], p.text_views[view])
    torch.testing.assert_close(out["uncond_embeddings"], p.uncond)


def test_thresholds_and_overrides_are_configurable(tiny_sd_dir, tmp_path):
    p = sd(tiny_sd_dir, tmp_path, front_threshold=30.0, back_threshold=30.0, view_prompt_overrides={"back": "a cube's back"})
    assert p.view_texts[BACK] == "a cube's back" and p.view_texts[FRONT] == "a red cube, front view"
    rows = p().for_batch({"elevation": torch.tensor([0.0, 0.0]), "azimuth": torch.tensor([35.0, 155.0])})["text_embeddings"]
    torch.testing.assert_close(rows, p.text_views[[SIDE, BACK]])
    torch.testing.assert_close(p.text_views[BACK], direct_clip(str(tiny_sd_dir), ["a cube's back"])[0])
    plain = sd(tiny_sd_dir, tmp_path, view_dependent_prompting=False)().for_batch({})
    torch.testing.assert_close(plain["text_embeddings"], p.text)


def test_diagonal_views_embed_six_view_prompts(tiny_sd_dir, tmp_path):
    p = sd(tiny_sd_dir, tmp_path, front_threshold=22.5, back_threshold=22.5, diagonal_threshold=22.5)
    assert p.text_views.shape[0] == 6 and p.view_texts[FRONT_SIDE] == "a red cube, front side view"
    torch.testing.assert_close(p.text_views[BACK_SIDE], direct_clip(str(tiny_sd_dir), ["a red cube, backside side view"])[0])
    rows = p().for_batch({"elevation": torch.tensor([0.0, 0.0, 0.0]), "azimuth": torch.tensor([10.0, -50.0, 140.0])})
    torch.testing.assert_close(rows["text_embeddings"], p.text_views[[FRONT, FRONT_SIDE, BACK_SIDE]])
    with pytest.raises(ConfigError, match="diagonal_threshold=null"):
        sd(tiny_sd_dir, tmp_path, diagonal_threshold=22.5, use_perp_neg=True)


def test_bad_config_is_named(tiny_sd_dir, tmp_path):
    with pytest.raises(ConfigError, match="view_prompt_overrides"):
        sd(tiny_sd_dir, tmp_path, view_prompt_overrides={"frnt": "x"})
    with pytest.raises(ConfigError, match="system.prompt is empty"):
        StableDiffusionPromptProcessor(StableDiffusionPromptProcessorConfig(prompt="  ", pretrained_model_name_or_path=str(tiny_sd_dir)))


def test_missing_text_encoder_is_a_quick_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nobody-here/no-such-text-model"
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        StableDiffusionPromptProcessor(
            StableDiffusionPromptProcessorConfig(prompt="a red cube", pretrained_model_name_or_path=name, cache_dir=str(tmp_path))
        )
    assert time.perf_counter() - start < 10.0
    assert name in str(info.value) and "text encoder" in str(info.value) and "hf download" in str(info.value)
