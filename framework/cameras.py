"""Camera and ray math: the one module that owns the project's camera convention.

World: right-handed, **+z up**, object at the origin. A camera at azimuth 0, elevation 0
sits on +x looking at the origin ("front"); azimuth grows counter-clockwise seen from above
(azimuth 90 deg puts the camera on +y); elevation is positive above the xy-plane.

Camera-to-world matrices use the OpenGL camera: it looks down its local -z, +y is up in the
image and +x is to the right. Pixel (row i, column j) has row 0 at the top of the image.

Every other module (random cameras, volume renderer, toy exemplar renderer, rasterizer)
calls these functions instead of re-deriving the maths.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)


def spherical_to_cartesian(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Camera centre from spherical coordinates around the origin.

    elevation_deg, azimuth_deg, distance: (B,) -> (B, 3)
    """
    elevation = torch.deg2rad(elevation_deg)
    azimuth = torch.deg2rad(azimuth_deg)
    return torch.stack(
        [
            distance * torch.cos(elevation) * torch.cos(azimuth),
            distance * torch.cos(elevation) * torch.sin(azimuth),
            distance * torch.sin(elevation),
        ],
        dim=-1,
    )


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices for cameras at `eye` looking at `target`.

    eye, target: (B, 3); up: (B, 3) or None for world +z -> c2w (B, 4, 4)

    At the poles (looking straight down +-z) the world up is parallel to the view direction;
    there we fall back to +x as the up hint so the matrix stays a rotation.
    """
    if up is None:
        up = eye.new_tensor(WORLD_UP).expand_as(eye)
    forward = F.normalize(target - eye, dim=-1)
    right = torch.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.cross(forward, eye.new_tensor((1.0, 0.0, 0.0)).expand_as(eye), dim=-1)
    right = F.normalize(torch.where(degenerate, fallback, right), dim=-1)
    cam_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = cam_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w


def orbit_c2w(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Cameras on a sphere around the origin, looking at it. (B,) x3 -> (B, 4, 4)"""
    eye = spherical_to_cartesian(elevation_deg, azimuth_deg, distance)
    return look_at(eye, torch.zeros_like(eye))


def focal_from_fovy(fovy_rad: Tensor, height: int) -> Tensor:
    """Focal length in pixels for a vertical field of view. (B,) -> (B,)"""
    return 0.5 * height / torch.tan(0.5 * fovy_rad)


def camera_ray_directions(height: int, width: int, focal: Tensor) -> Tensor:
    """Unnormalised ray directions in camera space through pixel centres.

    focal: (B,) pixels -> (B, H, W, 3), z = -1 (OpenGL: looking down -z, +y up, row 0 at top).
    """
    device, dtype = focal.device, focal.dtype
    j = torch.arange(width, device=device, dtype=dtype) + 0.5
    i = torch.arange(height, device=device, dtype=dtype) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    f = focal.view(-1, 1, 1)
    x = (jj - 0.5 * width) / f
    y = -(ii - 0.5 * height) / f
    z = -torch.ones_like(x)
    return torch.stack([x, y, z], dim=-1)


def rays_from_c2w(directions: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """World-space rays for camera-space directions.

    directions: (B, H, W, 3); c2w: (B, 4, 4) -> origins (B, H, W, 3), unit directions (B, H, W, 3)
    """
    rotation = c2w[:, None, None, :3, :3]
    rays_d = F.normalize((rotation @ directions[..., None])[..., 0], dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def get_rays(c2w: Tensor, fovy_rad: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Rays through every pixel. c2w: (B, 4, 4); fovy_rad: (B,) -> two (B, H, W, 3)"""
    directions = camera_ray_directions(height, width, focal_from_fovy(fovy_rad, height))
    return rays_from_c2w(directions, c2w)


def camera_batch(
    c2w: Tensor,  # (B, 4, 4)
    fovy_rad: Tensor,  # (B,)
    elevation_deg: Tensor,  # (B,)
    azimuth_deg: Tensor,  # (B,)
    distance: Tensor,  # (B,)
    camera_position: Tensor,  # (B, 3)
    light_position: Tensor,  # (B, 3)
    height: int,
    width: int,
) -> dict:
    """The camera batch every data module yields (docs/architecture.md), with its rays."""
    rays_o, rays_d = get_rays(c2w, fovy_rad, height, width)
    return {
        "c2w": c2w,
        "fovy": fovy_rad,
        "elevation": elevation_deg,
        "azimuth": azimuth_deg,
        "distance": distance,
        "camera_position": camera_position,
        "light_position": light_position,
        "rays_o": rays_o,
        "rays_d": rays_d,
        "height": height,
        "width": width,
    }


def projection_matrix(fovy_rad: Tensor, aspect: float, near: float = 0.01, far: float = 100.0) -> Tensor:
    """OpenGL perspective projection matrices (B, 4, 4) for rasterizers."""
    proj = torch.zeros(fovy_rad.shape[0], 4, 4, dtype=fovy_rad.dtype, device=fovy_rad.device)
    f = 1.0 / torch.tan(0.5 * fovy_rad)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2.0 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


def turntable(
    n_views: int, elevation_deg: float, distance: float, fovy_deg: float, start_azimuth_deg: float = 0.0
) -> dict[str, Tensor]:
    """n evenly spaced views around the object (test videos, validation).

    Returns elevation / azimuth (deg), distance, fovy (rad), c2w (n, 4, 4).
    """
    azimuth = start_azimuth_deg + torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    elevation = torch.full((n_views,), float(elevation_deg))
    dist = torch.full((n_views,), float(distance))
    fovy = torch.full((n_views,), math.radians(fovy_deg))
    return {
        "elevation": elevation,
        "azimuth": azimuth,
        "distance": dist,
        "fovy": fovy,
        "c2w": orbit_c2w(elevation, azimuth, dist),
    }
