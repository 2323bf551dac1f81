"""Which size or yaw of the TRUE shape does SDS with a toy prior pull toward? A diagnostic of priors.

For each prompt and each perturbation p of its true scene (size: the object scaled by s, rendered by
bringing the cameras in by 1/s; yaw: the object turned by phi degrees about +z, rendered by turning the
cameras by -phi, while the view words follow each camera's own azimuth, as in a run), it renders the
method's cameras, draws t and noise as SDS does, and projects the SDS descent step onto
d render / d p (a central finite difference):

    pull = -sum_pixels w(t) (eps_hat(x_t; y, s) - eps) * d x / d p       (DreamFusion Eq. 3, w = 1 - abar)

pull > 0: SDS increases p (grows the object, turns it further). Printed as mean ± standard error over
repetitions of t and noise; asserts nothing.

    .venv/bin/python benchmarks/sds_shape_preference.py --direction size --values 0.85,1,1.15
    .venv/bin/python benchmarks/sds_shape_preference.py --direction yaw --values 10,20,30,40 \
        --prompts "a orange cube,a red cube" --prior <folder> --diagonal-threshold 22.5
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.guidance.cfg import guided_noise  # noqa: E402
from models.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig  # noqa: E402
from models.priors.toy.dataset import ToyDatasetConfig, camera_sampler  # noqa: E402
from models.priors.toy.render import render_scene  # noqa: E402
from models.priors.toy.scenes import parse_prompt  # noqa: E402
from models.prompt_processors.text import DeepFloydIFPromptProcessor, DeepFloydIFPromptProcessorConfig  # noqa: E402

SHIPPED = REPO / "models/priors/toy/weights/toy-text-to-image"


def turn_about_z(degrees: float) -> torch.Tensor:
    """(4, 4) rotation about +z."""
    a = math.radians(degrees)
    m = torch.eye(4)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return m


def render(scene, cameras: dict, direction: str, p: float, resolution: int) -> torch.Tensor:
    """The scene perturbed by p, seen from `cameras` -> rgb (B, R, R, 3) in [0, 1]."""
    c2w = cameras["c2w"].clone()
    if direction == "size":
        c2w[:, :3, 3] /= p  # a camera 1/s as far sees the object s times as large
    else:
        c2w = turn_about_z(-p) @ c2w  # the object turned by +phi is the cameras turned by -phi
    return render_scene(scene, c2w, cameras["fovy"], resolution, resolution, supersample=2)["rgb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", default=str(SHIPPED))
    parser.add_argument("--direction", choices=["size", "yaw"], default="size")
    parser.add_argument("--values", type=lambda s: [float(v) for v in s.split(",")], default=None,
                        help="sizes (default 0.85,1,1.15) or yaw degrees (default 10,20,30,40)")
    parser.add_argument("--prompts", type=lambda s: s.split(","), default=["a orange cube", "a purple cone"])
    parser.add_argument("--t-range", type=lambda s: [int(v) for v in s.split(",")], default=[20, 980])
    parser.add_argument("--guidance-scale", type=float, default=21.0)
    parser.add_argument("--diagonal-threshold", type=float, default=None,
                        help="the prior's six view words (front/back thresholds become this too)")
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    values = args.values or ([0.85, 1.0, 1.15] if args.direction == "size" else [10.0, 20.0, 30.0, 40.0])
    step = 0.03 if args.direction == "size" else 2.0  # finite-difference half step (relative / degrees)

    torch.manual_seed(0)
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=args.prior))
    resolution = prior.image_size
    # the cameras of dreamfusion-toy-unet (one distance and field of view, its elevation range)
    cameras = camera_sampler(
        ToyDatasetConfig(camera_distance_range=[1.6, 1.6], fovy_range=[40.0, 40.0], elevation_range=[-10.0, 60.0]),
        args.cameras, seed=3,
    ).sample()
    views = {}
    if args.diagonal_threshold is not None:
        d = args.diagonal_threshold
        views = dict(front_threshold=d, back_threshold=d, diagonal_threshold=d)
    cache = tempfile.mkdtemp(prefix="sds-preference-")
    print(f"{args.direction} pull, prior {args.prior}, t {args.t_range}, guidance {args.guidance_scale}")
    for prompt in args.prompts:
        condition = DeepFloydIFPromptProcessor(DeepFloydIFPromptProcessorConfig(
            prompt=prompt, pretrained_model_name_or_path=args.prior, cache_dir=cache, **views))()
        scene = parse_prompt(prompt)
        row = []
        for p in values:
            lo, hi = (p / (1 + step), p * (1 + step)) if args.direction == "size" else (p - step, p + step)
            x = prior.encode(render(scene, cameras, args.direction, p, resolution))  # (B, 3, R, R)
            # d x / d p in the prior's pixel space ([-1, 1]: twice the [0, 1] render's)
            dx = 2.0 * (render(scene, cameras, args.direction, hi, resolution)
                        - render(scene, cameras, args.direction, lo, resolution)).permute(0, 3, 1, 2) / (hi - lo)
            g = torch.Generator().manual_seed(1)
            pulls = []
            for _ in range(args.repeats):
                t = torch.randint(args.t_range[0], args.t_range[1], (len(x),), generator=g)
                noise = torch.randn(x.shape, generator=g)
                abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
                x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
                with torch.no_grad():
                    eps_hat = guided_noise(prior, x_t, t, condition, cameras, args.guidance_scale)
                pulls.append(float((-(1 - abar) * (eps_hat - noise) * dx).sum() / len(x)))
            pull = torch.tensor(pulls)
            row.append(f"{p:g}: {pull.mean():+.3f} ± {pull.std() / math.sqrt(len(pull)):.3f}")
        print(f"{prompt:18s} | " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
