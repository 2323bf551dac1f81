"""Which size or yaw of the TRUE shape does SDS with a toy prior pull toward? A diagnostic of priors.

The method config (`--config`, default dreamfusion-toy-unet, with Hydra overrides) gives the prior,
the prompt processor (its view words), the cameras' elevation range, distance and field of view, and
the guidance scale and t range at a training step (`--step`, default 0: the run's start). For each
prompt and each perturbation p of its true scene (size: the object scaled by s, rendered by bringing
the cameras in by 1/s; yaw: the object turned by phi degrees about +z, rendered by turning the
cameras by -phi, while the view words follow each camera's own azimuth, as in a run), it renders
those cameras, draws t and noise as SDS does, and projects the SDS descent step onto
d render / d p (a central finite difference):

    pull = -sum_pixels w(t) (eps_hat(x_t; y, s) - eps) * d x / d p     (DreamFusion Eq. 3, w: the guidance's weighting)

pull > 0: SDS increases p (grows the object, turns it further). Printed as mean ± standard error over
repetitions of t and noise; asserts nothing.

    .venv/bin/python benchmarks/sds_shape_preference.py --direction size --values 0.85,1,1.15
    .venv/bin/python benchmarks/sds_shape_preference.py --direction yaw --prompts "a orange cube,a red cube" \
        system.guidance.prior.pretrained_model_name_or_path=<folder> system.prompt_processor.diagonal_threshold=22.5 \
        system.prompt_processor.front_threshold=22.5 system.prompt_processor.back_threshold=22.5
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.config import instantiate  # noqa: E402
from launch import slug  # noqa: E402,F401  (registers schemas and the slug resolver)
from models.guidance.cfg import guided_noise  # noqa: E402
from models.guidance.rule import StepSchedules, sds_weight  # noqa: E402
from models.guidance.sds import sds_gradient  # noqa: E402
from models.priors.base import diffuse  # noqa: E402
from models.priors.toy.dataset import ToyDatasetConfig, camera_sampler  # noqa: E402
from models.priors.toy.render import render_scene  # noqa: E402
from models.priors.toy.scenes import parse_prompt  # noqa: E402


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
    parser.add_argument("--config", default="dreamfusion-toy-unet")
    parser.add_argument("--direction", choices=["size", "yaw"], default="size")
    parser.add_argument("--values", type=lambda s: [float(v) for v in s.split(",")], default=None,
                        help="sizes (default 0.85,1,1.15) or yaw degrees (default 10,20,30,40)")
    parser.add_argument("--prompts", type=lambda s: s.split(","), default=["a orange cube", "a purple cone"])
    parser.add_argument("--t-range", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="t drawn in [low, high); default: the guidance's t bounds at --step")
    parser.add_argument("--step", type=int, default=0, help="training step whose CFG scale and t bounds are used")
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the method config")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=args.config, overrides=args.overrides)
    values = args.values or ([0.85, 1.0, 1.15] if args.direction == "size" else [10.0, 20.0, 30.0, 40.0])
    step = 0.03 if args.direction == "size" else 2.0  # finite-difference half step (relative / degrees)

    guidance = cfg.system.guidance
    torch.manual_seed(0)
    prior = instantiate(guidance.prior)
    resolution = prior.image_size
    settings = StepSchedules(guidance).at(args.step, len(prior.alphas_cumprod))
    t_range = args.t_range or [settings.min_step, settings.max_step]
    cameras = camera_sampler(
        ToyDatasetConfig(
            camera_distance_range=list(cfg.data.camera_distance_range),
            fovy_range=list(cfg.data.fovy_range),
            elevation_range=list(cfg.data.elevation_range),
        ),
        args.cameras, seed=3,
    ).sample()
    cfg.system.prompt_processor.cache_dir = tempfile.mkdtemp(prefix="sds-preference-")
    print(f"{args.direction} pull, {args.config} {' '.join(args.overrides)}, t {t_range}, guidance {settings.guidance_scale:g}")
    for prompt in args.prompts:
        cfg.system.prompt = prompt
        condition = instantiate(cfg.system.prompt_processor)()
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
                t = torch.randint(t_range[0], t_range[1], (len(x),), generator=g)
                noise = torch.randn(x.shape, generator=g)
                abar = prior.alphas_cumprod[t]
                with torch.no_grad():
                    eps_hat = guided_noise(prior, diffuse(x, abar, noise), t, condition, cameras, settings.guidance_scale)
                grad = sds_gradient(eps_hat, noise, sds_weight(abar, guidance.weighting))
                pulls.append(float((-grad * dx).sum() / len(x)))
            pull = torch.tensor(pulls)
            row.append(f"{p:g}: {pull.mean():+.3f} ± {pull.std() / math.sqrt(len(pull)):.3f}")
        print(f"{prompt:18s} | " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
