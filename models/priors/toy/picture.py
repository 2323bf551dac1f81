"""One RGBA picture of a toy scene: the input of image-to-3D on the toy world (zero123-toy).

    python -m models.priors.toy.picture "a red cube" red_cube_rgba.png --elevation 15

The picture is the toy world's image formation (render.py: shaded albedo over white, anti-aliased
by supersampling) with the coverage as alpha, taken by a camera looking at the origin from
(elevation, azimuth, distance) with the toy cameras' defaults (distance 1.6, fovy 40°), so a
zero123-toy run given the same data.default_* camera sees exactly this view.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from framework import cameras

from .render import render_scene
from .scenes import parse_prompt

TOY_DISTANCE, TOY_FOVY_DEG = 1.6, 40.0


def render_picture(
    prompt: str, elevation_deg: float, azimuth_deg: float = 0.0, distance: float = TOY_DISTANCE,
    fovy_deg: float = TOY_FOVY_DEG, size: int = 256, supersample: int = 2,
) -> np.ndarray:
    """-> RGBA (size, size, 4) uint8 of the prompt's scene from that camera."""
    scene = parse_prompt(prompt)
    eye = cameras.spherical_to_cartesian(
        torch.tensor([float(elevation_deg)]), torch.tensor([float(azimuth_deg)]), torch.tensor([float(distance)])
    )
    c2w = cameras.look_at(eye, torch.zeros(1, 3))
    out = render_scene(scene, c2w, torch.deg2rad(torch.tensor([float(fovy_deg)])), size, size, supersample=supersample)
    rgba = torch.cat([out["rgb"][0], out["opacity"][0]], dim=-1)
    return (rgba.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


def save_picture(path: str | Path, prompt: str, elevation_deg: float, **camera: float) -> Path:
    """Write render_picture(...) as an RGBA PNG; -> the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_picture(prompt, elevation_deg, **camera), mode="RGBA").save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Render an RGBA picture of a toy scene (zero123-toy's input).")
    parser.add_argument("prompt", help='a toy prompt, e.g. "a red cube" (TOYWORLD.md)')
    parser.add_argument("out", help="PNG path")
    parser.add_argument("--elevation", type=float, default=15.0)
    parser.add_argument("--azimuth", type=float, default=0.0)
    parser.add_argument("--distance", type=float, default=TOY_DISTANCE)
    parser.add_argument("--fovy", type=float, default=TOY_FOVY_DEG)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    path = save_picture(args.out, args.prompt, args.elevation, azimuth_deg=args.azimuth, distance=args.distance,
                        fovy_deg=args.fovy, size=args.size)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
