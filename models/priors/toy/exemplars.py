"""A bank of rendered exemplar views of one toy scene, cached on disk, with camera look-up.

The exact-score prior (exact_score.py) is a closed-form denoiser over such a bank. Cameras are
drawn once with a fixed seed from the same ranges as the random-camera data module: elevation,
azimuth, distance and fovy each uniform in their range (angles in degrees), looking at the origin
(framework.cameras.orbit_c2w). The data module draws elevation half the time uniform on the
sphere instead; the bank only has to cover the ranges, since look-up is by nearest camera. Rendering a bank takes seconds,
so images are cached as fp16 `.pt` files keyed by everything that determines them.

Camera metric used by `nearest` (smaller = more alike):

    D = angle^2 / sigma_dir^2 + log(s / s_i)^2 / sigma_scale^2

s = 1 / (distance * tan(fovy / 2)) is the apparent size of the object in the image. `angle` is,
by default ("rotation"), the angle of the relative rotation between the two cameras'
orientations, acos((tr(R^T R_i) - 1) / 2); with "direction" it is the angle between the view
directions. They agree at the equator; near the pole two orbit cameras whose azimuths differ
by d look along almost the same direction but see images rolled by about d, which only the
rotation angle counts (it matters for elevation ranges reaching 90 deg). sigma_dir (radians;
given in degrees) is the angle that costs as much as a relative size change of sigma_scale (a
log ratio): defaults 10 deg and 0.1 treat a 10 deg turn like a 10 % zoom. Only their ratio
matters for the ranking.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from framework.cameras import orbit_c2w, spherical_to_cartesian
from framework.progress import progress
from framework.step_times import section

from .render import RENDERER_VERSION, render_scene
from .scenes import ToyScene, parse_prompt

DEFAULT_SIGMA_DIR_DEG = 10.0
DEFAULT_SIGMA_SCALE = 0.1


def default_cache_dir() -> Path:
    """$TOY3D_CACHE, else ~/.cache/toy3d/exemplars."""
    env = os.environ.get("TOY3D_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "toy3d" / "exemplars"


def camera_distance(
    elevation: Tensor,  # (B,) deg
    azimuth: Tensor,  # (B,) deg
    distance: Tensor,  # (B,)
    fovy_rad: Tensor,  # (B,)
    bank_rotations: Tensor,  # (N, 3, 3) camera-to-world rotations of the bank
    bank_log_size: Tensor,  # (N,) log apparent size of the bank
    sigma_dir_deg: float = DEFAULT_SIGMA_DIR_DEG,
    sigma_scale: float = DEFAULT_SIGMA_SCALE,
    angle: str = "rotation",
) -> Tensor:
    """The camera metric D (module docstring) between B query cameras and N bank cameras. -> (B, N)"""
    elevation, azimuth = elevation.float(), azimuth.float()
    if angle == "rotation":
        rot = orbit_c2w(elevation, azimuth, torch.ones_like(elevation))[:, :3, :3].to(bank_rotations)
        cos = (torch.einsum("bij,nij->bn", rot, bank_rotations) - 1.0) * 0.5  # tr(R^T R_i) = sum_ij R_ij R_i,ij
    elif angle == "direction":  # origin-to-camera direction = the camera's local +z axis
        dirs = spherical_to_cartesian(elevation, azimuth, torch.ones_like(elevation)).to(bank_rotations)
        cos = dirs @ bank_rotations[:, :, 2].T
    else:
        raise ValueError(f"camera angle must be 'rotation' or 'direction', got {angle!r}")
    theta = torch.acos(cos.clamp(-1.0, 1.0))
    log_size = _log_apparent_size(distance.to(bank_rotations), fovy_rad.to(bank_rotations))
    d_scale = log_size[:, None] - bank_log_size[None, :]
    return (theta / math.radians(sigma_dir_deg)) ** 2 + (d_scale / sigma_scale) ** 2


def _log_apparent_size(distance: Tensor, fovy_rad: Tensor) -> Tensor:
    return -torch.log(distance * torch.tan(0.5 * fovy_rad))


class ExemplarBank:
    """N views of one scene. `images` (N, H, W, 3) float32 in [0, 1]; cameras as (N,) tensors.

    elevation_range, azimuth_range, fovy_range in degrees; distance_range in world units.
    """

    def __init__(
        self,
        scene: ToyScene | str,
        n: int,
        height: int,
        width: int,
        elevation_range: Sequence[float] = (-10.0, 90.0),
        azimuth_range: Sequence[float] = (-180.0, 180.0),
        distance_range: Sequence[float] = (1.0, 1.5),
        fovy_range: Sequence[float] = (40.0, 70.0),
        seed: int = 0,
        supersample: int = 1,
        cache_dir: str | os.PathLike | None = None,
        sigma_dir_deg: float = DEFAULT_SIGMA_DIR_DEG,
        sigma_scale: float = DEFAULT_SIGMA_SCALE,
        camera_angle: str = "rotation",
        show_progress: bool = True,
    ) -> None:
        self.scene = parse_prompt(scene) if isinstance(scene, str) else scene
        self.n, self.height, self.width = int(n), int(height), int(width)
        self.ranges = {
            "elevation": [float(v) for v in elevation_range],
            "azimuth": [float(v) for v in azimuth_range],
            "distance": [float(v) for v in distance_range],
            "fovy": [float(v) for v in fovy_range],
        }
        self.seed, self.supersample = int(seed), int(supersample)
        self.sigma_dir_deg, self.sigma_scale = float(sigma_dir_deg), float(sigma_scale)
        if camera_angle not in ("rotation", "direction"):
            raise ValueError(f"camera_angle must be 'rotation' or 'direction', got {camera_angle!r}")
        self.camera_angle = camera_angle
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.show_progress = show_progress  # a bar while rendering (a cold cache); False: the caller shows one

        g = torch.Generator().manual_seed(self.seed)

        def uniform(lo_hi: list[float]) -> Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(self.n, generator=g)

        self.elevation = uniform(self.ranges["elevation"])  # (N,) deg
        self.azimuth = uniform(self.ranges["azimuth"])  # (N,) deg
        self.distance = uniform(self.ranges["distance"])  # (N,)
        self.fovy = torch.deg2rad(uniform(self.ranges["fovy"]))  # (N,) rad
        self.c2w = orbit_c2w(self.elevation, self.azimuth, self.distance)  # (N, 4, 4)
        self.rotations = self.c2w[:, :3, :3].contiguous()  # (N, 3, 3)
        self.log_size = _log_apparent_size(self.distance, self.fovy)  # (N,)
        self.images = self._load_or_render()  # (N, H, W, 3)

    @property
    def cache_key(self) -> str:
        spec = {
            "prompt": self.scene.prompt,
            "ranges": self.ranges,
            "n": self.n,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
            "supersample": self.supersample,
            "renderer": RENDERER_VERSION,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def cache_path(self) -> Path:
        slug = self.scene.prompt.replace(" ", "_")
        return self.cache_dir / f"{slug}-{self.cache_key}.pt"

    def _load_or_render(self) -> Tensor:
        path = self.cache_path
        if path.exists():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if data["key"] == self.cache_key and tuple(data["images"].shape) == (self.n, self.height, self.width, 3):
                    return data["images"].float()
            except Exception:  # a truncated or foreign file: render again and overwrite
                pass
        chunks = []
        what = f"rendering the exemplar bank of {self.scene.prompt!r}"
        with section("exemplar bank"), progress(what, self.n, "views", note=f"once: cached in {self.cache_dir}",
                                                show=self.show_progress) as bar:
            for i in range(0, self.n, 256):
                chunks.append(render_scene(
                    self.scene, self.c2w[i : i + 256], self.fovy[i : i + 256], self.height, self.width, self.supersample
                )["rgb"])  # fmt: skip
                bar.update(chunks[-1].shape[0])
        images = torch.cat(chunks).clamp(0.0, 1.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename, so parallel runs (Hydra multirun) never read a half-written file
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"key": self.cache_key, "images": images.half()}, tmp)
        os.replace(tmp, path)
        return images.half().float()  # identical to what a later cache hit returns

    def camera_distance(
        self,
        elevation: Tensor,  # (B,) deg
        azimuth: Tensor,  # (B,) deg
        distance: Tensor,  # (B,)
        fovy_rad: Tensor,  # (B,)
    ) -> Tensor:
        """The camera metric D to every bank camera. -> (B, N)"""
        return camera_distance(
            elevation, azimuth, distance, fovy_rad, self.rotations, self.log_size,
            self.sigma_dir_deg, self.sigma_scale, self.camera_angle,
        )  # fmt: skip

    def nearest(
        self,
        elevation: Tensor,  # (B,) deg
        azimuth: Tensor,  # (B,) deg
        distance: Tensor,  # (B,)
        fovy_rad: Tensor,  # (B,)
        k: int,
    ) -> Tensor:
        """Indices of the k bank views closest by the camera metric, nearest first. -> LongTensor (B, k)"""
        k = min(int(k), self.n)
        d = self.camera_distance(elevation.cpu(), azimuth.cpu(), distance.cpu(), fovy_rad.cpu())
        return d.topk(k, dim=-1, largest=False).indices
