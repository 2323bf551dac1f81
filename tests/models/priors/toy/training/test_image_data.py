"""Batches for the text-to-image toy prior: captions match their images, held-out prompts never appear."""
from __future__ import annotations

import torch

from models.priors.toy.training.image_data import ToyImageBatches, ToyImagesDataConfig, ToyImagesDataModule
from models.priors.toy.dataset import ToyDatasetConfig
from models.priors.toy.scenes import is_held_out, parse_prompt
from models.prompt_processors.view_dependent import BACK_SIDE, FRONT_SIDE, ViewDirections, assign_directions, view_prompts


def small_module(tmp_path, **kw) -> ToyImagesDataModule:
    cfg = ToyImagesDataConfig(
        dataset=ToyDatasetConfig(n_images=48, resolution=16, supersample=1), cache_path=str(tmp_path / "d.pt"), batch_size=16, **kw
    )
    module = ToyImagesDataModule(cfg)
    module.setup()
    return module


def test_batches_are_normalised_images_with_training_captions(tmp_path):
    module = small_module(tmp_path, view_prompt_probability=0.5)
    batch = next(iter(module.train_dataloader()))
    assert batch["images"].shape == (16, 3, 16, 16)
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1
    suffixed = [p for p in batch["prompts"] if "view" in p]
    assert 0 < len(suffixed) < 16  # both kinds of caption occur at p = 0.5 in a batch of 16
    for caption in batch["prompts"]:
        base = caption.split(",")[0]
        parse_prompt(base)
        assert not is_held_out(base)


def test_view_suffix_is_the_one_of_the_image_camera(tmp_path):
    module = small_module(tmp_path, view_prompt_probability=1.0, flip=False)
    data = module.data
    direction = assign_directions(data["elevation"], data["azimuth"])
    # the caption of row i is the prompt's view prompt for row i's direction
    stream = ToyImageBatches(data, module.cfg)
    for i in range(len(data["images"])):
        prompt = data["prompts"][int(data["prompt_index"][i])]
        assert stream.caption(i, True) == view_prompts(prompt)[int(direction[i])]


def test_diagonal_view_captions(tmp_path):
    directions = ViewDirections(22.5, 22.5, 60.0, 22.5)
    module = small_module(tmp_path, view_prompt_probability=1.0, view_directions=directions)
    stream = ToyImageBatches(module.data, module.cfg)
    assigned = directions.assign(module.data["elevation"], module.data["azimuth"])
    for i in range(len(module.data["images"])):
        prompt = module.data["prompts"][int(module.data["prompt_index"][i])]
        assert stream.caption(i, True) == view_prompts(prompt, diagonal_views=True)[int(assigned[i])]
    assert {FRONT_SIDE, BACK_SIDE} & set(assigned.tolist())  # 48 random cameras reach a diagonal sector


def test_the_cached_dataset_is_reused_and_regenerated_when_settings_change(tmp_path):
    first = small_module(tmp_path)
    mtime = (tmp_path / "d.pt").stat().st_mtime_ns
    small_module(tmp_path)
    assert (tmp_path / "d.pt").stat().st_mtime_ns == mtime
    cfg = ToyImagesDataConfig(dataset=ToyDatasetConfig(n_images=32, resolution=16, supersample=1), cache_path=str(tmp_path / "d.pt"))
    other = ToyImagesDataModule(cfg)
    other.setup()
    assert len(other.data["images"]) == 32 and len(first.data["images"]) == 48
