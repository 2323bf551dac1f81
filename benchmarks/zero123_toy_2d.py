"""A 2D check of the zero123 guidance's settings on the toy view prior: how close does image-conditioned SDS
alone bring a free 32² image to the true target view?

    .venv/bin/python benchmarks/zero123_toy_2d.py [--steps 300] [--prompts "a purple cone" "a green torus"]

For each toy scene: the reference view (elevation 20, azimuth 0, distance 1.6) is given to the guidance with
set_reference; three target views (20/90/1.6, 40/200/1.5, 0/-60/1.7) start as white images (sigmoid logits,
Adam lr 0.05) and are optimised by loss_sds only. The score is the mean |image - true render| over the views
(with a white image and the reference view itself as baselines). The t schedules' step points are scaled to
--steps: the top of t holds for the first third and falls to 0.5 by two thirds. Prints figures; asserts
nothing. About a minute per setting and scene on one CPU core. The figures in
configs/system/guidance/zero123-toy.yaml come from this script.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.cameras import orbit_c2w  # noqa: E402
from models.guidance.zero123 import Zero123Guidance, Zero123GuidanceConfig  # noqa: E402
from models.priors.toy.render import render_scene  # noqa: E402
from models.priors.toy.scenes import parse_prompt  # noqa: E402
from models.priors.zero123 import Zero123PriorConfig  # noqa: E402

REFERENCE = (20.0, 0.0, 1.6)
TARGETS = torch.tensor([[20.0, 90.0, 1.6], [40.0, 200.0, 1.5], [0.0, -60.0, 1.7]])


def settings(steps: int) -> dict[str, dict]:
    third = steps // 3
    falling = [[0, 0.98], [third, 0.98], [2 * third, 0.5]]
    threestudio = dict(min_step_percent=[[0, 0.4], [third, 0.2]], max_step_percent=[[0, 0.85], [third, 0.5]])
    return {
        "threestudio zero123 t, s 3": dict(guidance_scale=3.0, **threestudio),
        "threestudio zero123 t, s 5": dict(guidance_scale=5.0, **threestudio),
        "t 0.02-0.98 -> 0.5, s 3": dict(guidance_scale=3.0, min_step_percent=0.02, max_step_percent=falling),
        "t 0.2-0.98 -> 0.5, s 3": dict(guidance_scale=3.0, min_step_percent=0.2, max_step_percent=falling),
        "t 0.2-0.98 -> 0.5, s 5": dict(guidance_scale=5.0, min_step_percent=0.2, max_step_percent=falling),
        "t 0.2-0.98 -> 0.5, s 7.5": dict(guidance_scale=7.5, min_step_percent=0.2, max_step_percent=falling),
    }


def render(prompt: str, cameras: torch.Tensor) -> torch.Tensor:
    """cameras (N, 3) elevation, azimuth, distance -> rgb (N, 32, 32, 3)."""
    c2w = orbit_c2w(cameras[:, 0], cameras[:, 1], cameras[:, 2])
    fovy = torch.full((cameras.shape[0],), math.radians(40.0))
    return render_scene(parse_prompt(prompt), c2w, fovy, 32, 32, supersample=2)["rgb"].clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--prompts", nargs="+", default=["a purple cone", "a green torus"])
    parser.add_argument("--prior", default="models/priors/toy/weights/toy-view-prior")
    args = parser.parse_args()
    prior_cfg = Zero123PriorConfig(pretrained_model_name_or_path=args.prior)
    prior = Zero123Guidance(Zero123GuidanceConfig(prior=prior_cfg)).prior  # loaded once, shared by every setting
    batch = {"elevation": TARGETS[:, 0], "azimuth": TARGETS[:, 1], "distance": TARGETS[:, 2]}
    truths = {p: render(p, TARGETS) for p in args.prompts}
    refs = {p: render(p, torch.tensor([REFERENCE])) for p in args.prompts}
    white = sum((1 - truths[p]).abs().mean().item() for p in args.prompts) / len(args.prompts)
    copy = sum((refs[p].expand_as(truths[p]) - truths[p]).abs().mean().item() for p in args.prompts) / len(args.prompts)
    print(f"baselines: white image {white:.4f}, the reference view itself {copy:.4f}")
    for name, overrides in settings(args.steps).items():
        start, errors = time.time(), []
        for prompt in args.prompts:
            torch.manual_seed(0)
            guidance = Zero123Guidance(Zero123GuidanceConfig(prior=prior_cfg, **overrides), prior=prior)
            guidance.set_reference(refs[prompt], *REFERENCE)
            logits = torch.full((len(TARGETS), 32, 32, 3), 2.0, requires_grad=True)  # sigmoid(2) ~ 0.88: near white
            optimiser = torch.optim.Adam([logits], lr=0.05)
            for step in range(args.steps):
                guidance.update_step(step)
                loss = guidance(torch.sigmoid(logits), None, batch)["loss_sds"]
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            errors.append((torch.sigmoid(logits).detach() - truths[prompt]).abs().mean().item())
        mean = sum(errors) / len(errors)
        print(f"{name:28s} {mean:.4f}  per scene {[round(e, 4) for e in errors]}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
