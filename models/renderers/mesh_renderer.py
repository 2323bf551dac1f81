"""Mesh renderer (threestudio's `nvdiff-rasterizer`): rasterise the geometry's isosurface.

Per call: mesh = geometry.isosurface() (differentiable for DMTet), project its vertices with
each camera's model-view-projection, rasterise, interpolate world positions and vertex
normals, shade the covered pixels with the material from the geometry's features there, then
antialias (models/renderers/rasterizer.py) so silhouettes pass gradients to the vertices.

Image orientation: the rasterizer (like nvdiffrast) puts NDC y = -1 in row 0; the project's
images have row 0 at the top (framework/cameras.py), so clip-space y is negated (threestudio
negates the projection's [1, 1] entry for the same reason). A pixel (i, j) then sees exactly
the scene along `get_rays(c2w, fovy, H, W)[:, i, j]`, as the volume renderer does.

Compositing matches the volume renderer: comp_rgb_fg is premultiplied by coverage,
comp_rgb = comp_rgb_fg + (1 - opacity) comp_rgb_bg, where opacity is the antialiased coverage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras import projection_matrix
from framework.interfaces import Background, Geometry, Material, Mesh, Renderer
from framework.value_checks import at_least, check_fields, check_order, greater_than, one_of
from models.renderers.rasterizer import BACKENDS, Rasterizer


@dataclass
class MeshRendererConfig:
    _target_: str = "models.renderers.mesh_renderer.MeshRenderer"
    backend: str = "auto"  # auto | torch | nvdiffrast
    near: float = 0.01  # clip planes of the projection (world units)
    far: float = 100.0
    chunk: int = 2**22  # torch backend: (triangle, pixel) candidates held at once

    def __post_init__(self) -> None:
        check_fields(self, backend=one_of(*BACKENDS), near=greater_than(0), far=greater_than(0), chunk=at_least(1))
        check_order(self, "near", "far", strict=True)


def mvp_matrices(c2w: Tensor, fovy: Tensor, height: int, width: int, near: float = 0.01, far: float = 100.0) -> Tensor:
    """c2w (B, 4, 4) OpenGL camera-to-world, fovy (B,) radians -> (B, 4, 4) world -> clip, with
    clip y negated so that row 0 of the raster is the top of the image."""
    proj = projection_matrix(fovy, width / height, near, far).to(c2w)
    mvp = proj @ torch.linalg.inv(c2w)
    return mvp * c2w.new_tensor([1.0, -1.0, 1.0, 1.0])[None, :, None]


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """vertices (V, 3), faces (F, 3) -> area-weighted unit vertex normals (V, 3)."""
    v = vertices[faces]
    fn = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # length = 2 * area
    n = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(n, dim=-1)


class MeshRenderer(Renderer):
    def __init__(self, cfg: MeshRendererConfig, geometry: Geometry, material: Material, background: Background, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.geometry, self.material, self.background = geometry, material, background
        self._rasterizers: dict[str, Rasterizer] = {}

    def rasterizer(self, device: torch.device) -> Rasterizer:
        key = str(device)
        if key not in self._rasterizers:
            self._rasterizers[key] = Rasterizer(self.cfg.backend, device=device, chunk=self.cfg.chunk)
        return self._rasterizers[key]

    def forward_batch(self, batch: dict[str, Any], bg_color: Tensor | None = None) -> dict[str, Any]:
        """Render a camera batch (framework/interfaces.py): needs rays_o, rays_d, light_position, c2w, fovy."""
        return self(batch["rays_o"], batch["rays_d"], batch["light_position"], bg_color=bg_color, c2w=batch["c2w"], fovy=batch["fovy"])

    def forward(
        self,
        rays_o: Tensor,  # (B, H, W, 3)
        rays_d: Tensor,  # (B, H, W, 3) unit
        light_positions: Tensor,  # (B, 3)
        bg_color: Tensor | None = None,  # (B, H, W, 3) or (3,) or (B, 3)
        c2w: Tensor | None = None,  # (B, 4, 4) required
        fovy: Tensor | None = None,  # (B,) radians, required
        mesh: Mesh | None = None,  # render this mesh instead of geometry.isosurface()
        shading: str | None = None,  # force the material's shading ('albedo' | 'textureless' | 'diffuse')
        **kwargs: Any,
    ) -> dict[str, Any]:
        """-> comp_rgb, comp_rgb_fg, comp_rgb_bg (B, H, W, 3); opacity, depth (B, H, W, 1);
        comp_normal (B, H, W, 3) in [0, 1] (black where empty, antialiased); mesh (the rendered Mesh, for
        mesh regularisers); rast (B, H, W, 4). The rays give the image size and the background's
        view directions; the camera itself comes from c2w and fovy."""
        if c2w is None or fovy is None:
            raise ValueError("MeshRenderer needs the camera: call forward(..., c2w=batch['c2w'], fovy=batch['fovy']) or forward_batch(batch)")
        B, H, W, _ = rays_o.shape
        device = rays_o.device
        mesh = self.geometry.isosurface() if mesh is None else mesh
        bg = self.background_image(rays_d, bg_color)
        if mesh.n_faces == 0:
            zeros = rays_o.new_zeros(B, H, W, 1)
            fg = rays_o.new_zeros(B, H, W, 3)
            return {"comp_rgb": bg, "comp_rgb_fg": fg, "comp_rgb_bg": bg, "opacity": zeros, "depth": zeros,
                    "comp_normal": fg, "mesh": mesh, "rast": rays_o.new_zeros(B, H, W, 4)}
        v, faces = mesh.vertices, mesh.faces.long()
        mvp = mvp_matrices(c2w.to(v), fovy.to(v), H, W, self.cfg.near, self.cfg.far)
        v_h = torch.cat([v, torch.ones_like(v[:, :1])], dim=-1)
        pos_clip = torch.einsum("bij,vj->bvi", mvp, v_h)  # (B, V, 4)
        r = self.rasterizer(device)
        rast = r.rasterize(pos_clip, faces, (H, W))
        attrs = torch.cat([v, vertex_normals(v, faces)], dim=-1)[None]
        gb = r.interpolate(attrs, rast, faces)  # (B, H, W, 6)
        covered = rast[..., 3] > 0  # (B, H, W)
        b_idx = covered.nonzero()[:, 0]
        pts = gb[..., :3][covered]
        normal = F.normalize(gb[..., 3:][covered], dim=-1)
        cam = c2w[:, :3, 3].to(v)
        to_pts = pts - cam[b_idx]
        features = self.geometry(pts, output_normal=False)["features"]
        rgb = self.material(
            features=features, viewdirs=F.normalize(to_pts, dim=-1), positions=pts,
            light_positions=light_positions.to(v)[b_idx], shading_normal=normal, shading=shading,
        )
        idx = covered.reshape(-1).nonzero()[:, 0]

        def scatter(values: Tensor) -> Tensor:  # (N, C) at covered pixels -> (B, H, W, C)
            return values.new_zeros(B * H * W, values.shape[-1]).index_copy(0, idx, values).reshape(B, H, W, -1)

        mask = covered[..., None].to(v.dtype)
        # threestudio's visualisation of normals, as the volume renderer: (n + 1) / 2, black where empty;
        # antialiased with the colour, so a guidance that sees the normals (ProlificDreamer's geometry
        # stage) moves the silhouette too
        normal_image = scatter((normal + 1.0) / 2.0)
        aa = r.antialias(torch.cat([scatter(rgb), mask, normal_image], dim=-1), rast, pos_clip, faces)
        fg, opacity, comp_normal = aa[..., :3], aa[..., 3:4].clamp(0.0, 1.0), aa[..., 4:]
        return {
            "comp_rgb": fg + (1.0 - opacity) * bg,
            "comp_rgb_fg": fg,
            "comp_rgb_bg": bg,
            "opacity": opacity,
            "depth": scatter(to_pts.norm(dim=-1, keepdim=True)),
            "comp_normal": comp_normal,
            "mesh": mesh,
            "rast": rast,
        }
