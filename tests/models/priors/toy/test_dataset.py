"""The trained toy priors' dataset: no held-out prompt, cameras in range, images are the toy renders."""
import torch

from models.priors.toy.dataset import ToyDatasetConfig, generate, training_prompts
from models.priors.toy.render import render_scene
from models.priors.toy.scenes import is_held_out, parse_prompt

HELD_OUT = ["a green torus", "a purple cone", "a orange cube", "a blue cylinder", "a yellow sphere"]


def test_training_prompts_exclude_every_held_out_prompt():
    singles, composites = training_prompts()
    assert len(singles) == 25 and len(composites) == 900 - 6 * 30  # composites with a torus on top are held out
    assert not set(HELD_OUT) & set(singles)
    assert all(not p.startswith(tuple(f"a {c} torus on top" for c in ("red", "green", "blue", "yellow", "purple", "orange")))
               for p in composites)


def test_generated_images_cameras_and_prompts():
    cfg = ToyDatasetConfig(n_images=40, resolution=16, supersample=1, chunk=16, seed=3)
    data = generate(cfg)
    images, index, prompts = data["images"], data["prompt_index"], data["prompts"]
    assert images.shape == (40, 16, 16, 3) and images.dtype == torch.uint8
    assert not any(is_held_out(prompts[i]) for i in index.tolist())
    lo, hi = cfg.elevation_range
    assert ((data["elevation"] >= lo - 1e-4) & (data["elevation"] <= hi + 1e-4)).all()
    assert ((data["distance"] >= 1.4) & (data["distance"] <= 1.8)).all()
    assert ((torch.rad2deg(data["fovy"]) >= 35 - 1e-4) & (torch.rad2deg(data["fovy"]) <= 45 + 1e-4)).all()
    # image k is exactly the toy render of its prompt from its camera
    for k in (0, 17, 39):
        rgb = render_scene(parse_prompt(prompts[index[k]]), data["c2w"][k : k + 1], data["fovy"][k : k + 1], 16, 16)["rgb"][0]
        assert (images[k].float() - rgb * 255).abs().max() <= 1.0
    assert (images.float().mean(dim=(1, 2, 3)) < 254).all()  # every image shows something
    again = generate(cfg)
    assert torch.equal(again["images"], images) and torch.equal(again["prompt_index"], index)
