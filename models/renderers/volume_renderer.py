"""NeRF volume renderer (threestudio's `nerf-volume-renderer`), with its ray marching in PyTorch.

Rays are marched with a constant step `sqrt(3) * 2 * radius / num_samples_per_ray` (so
num_samples_per_ray spans the box diagonal) between their entry and exit of the box
[-radius, radius]^3, with one random offset per ray when `randomized` (stratified sampling).
Samples in cells the occupancy grid marks empty are dropped before the network runs: that is
where the speed comes from. Surviving samples are kept packed (sorted by ray, `ray_indices`)
and composited with the quadrature of NeRF (Mildenhall et al. 2020, eq. 3):
alpha_i = 1 - exp(-sigma_i delta_i), T_i = exp(-sum_{j<i} sigma_j delta_j), w_i = T_i alpha_i.
The per-ray exclusive sum is one cumsum over the packed samples minus each ray's running
total at its first sample (in float64, so long packed sums lose no precision).

nerfacc's CUDA ray marching is not used even when nerfacc is installed; its OccGridEstimator
can update the grid (backend 'nerfacc').

Memory at high resolution (`grad_chunk_rays`). A training render keeps, for backward, every
sample's network activations (hash-grid corners and weights, MLP hidden layers, the analytic
normals' double-backward graph): that, not the image, is what grows with the resolution
(threestudio needs ~30 GB at ProlificDreamer's 512^2). With `grad_chunk_rays` set, the samples
are drawn for the whole image first (under no_grad, as always: the occupancy grid and the
stratified jitter are outside the differentiable part), then the differentiable part (networks,
material, compositing) runs one chunk of rays at a time inside activation checkpointing
(torch.utils.checkpoint, non-reentrant). The forward keeps only each chunk's inputs and outputs;
the backward re-runs one chunk's forward at a time and back-propagates through it, so the graph
held at once is one chunk's. The gradients are the ordinary path's (the same samples, the same
arithmetic per ray); the cost is about one extra forward of the networks per step. This is
PyTorch's way of doing what is also written by hand as "render without autograd, then
re-render chunk by chunk with autograd and back-propagate the image gradient".
Outputs are the ordinary path's: per-ray images and the packed per-sample tensors. Randomness
inside a chunk replays in its recomputation: checkpoint restores torch's RNG, and the renderer
replays Python's `random` (the material's shading choice, one per render, as unchunked). A
component drawing torch random numbers in its forward (none does) would draw them per chunk. The
background is evaluated over the whole image, outside the chunks, as in the ordinary path.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from framework.errors import ConfigError
from framework.interfaces import Background, Geometry, Material, Renderer
from framework.step_times import section
from framework.value_checks import at_least, check_fields, number_at_least, one_of, optional
from models.renderers.occupancy_grid import BACKENDS, OccupancyGrid


@dataclass
class VolumeRendererConfig:
    _target_: str = "models.renderers.volume_renderer.VolumeRenderer"
    num_samples_per_ray: int = 512
    randomized: bool = True
    eval_chunk_size: int = 160000  # rays per chunk outside training
    grid_prune: bool = True
    grid_resolution: int = 128
    grid_update_every: int = 16
    grid_warmup_steps: int = 256
    occ_threshold: float = 0.01
    return_comp_normal: bool = True
    return_normal_perturb: bool = False
    normal_perturb_std: float = 0.01
    backend: str = "auto"  # occupancy grid: auto | torch | nerfacc
    max_candidates: int = 2**22  # candidate samples generated at once (bounds memory at high resolution)
    early_stop_eps: Optional[float] = None
    """Drop samples whose transmittance before them is below this: they sit behind an opaque surface
    and add less than this to their ray. Found by one density pass without gradients over the
    samples the occupancy grid keeps: nerfacc's `early_stop_eps` (1e-4 in threestudio's renderer, whose
    `prune_alpha_threshold` passes the density to nerfacc's sampler). It pays when the density pass
    costs less than the forward and backward it saves (the toy demo: 1e-4 with alpha_threshold 0.01).
    None (default, every method's published tables): keep every sample."""
    alpha_threshold: float = 0.0
    """Also drop samples whose own opacity 1 - exp(-sigma delta) is at most this (nerfacc's `alpha_thre`,
    0.01 in threestudio; 0: only the transmittance test). Needs early_stop_eps set."""
    shade_at: str = "samples"
    """samples: the material shades every sample with its own normal, then the colours are composited
    (NeRF, DreamFusion, threestudio). surface: deferred shading, once per ray: the albedo, normal,
    position and light of the samples are composited, and the material (one with `shade`, e.g.
    diffuse-with-point-light) lights the composited albedo with the normalised composited normal at
    the expected surface point. Where light reaches some depth into a soft surface, per-sample shading
    mixes in interior samples whose normals are noise, so a render is darker than its albedo's true
    shading and the albedo is learnt too bright to compensate (docs/toy-world-results.md); at the
    surface, those normals mostly cancel in the sum."""
    grad_chunk_rays: Optional[int] = None
    """Training renders: differentiate chunks of this many rays under activation checkpointing,
    so the autograd graph held at once is one chunk's instead of the whole image's (e.g. 4096 for
    ProlificDreamer's 512^2). Same outputs and gradients; costs about one extra network forward
    per step. None: one graph over all rays (no recomputation). See the module docstring."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            num_samples_per_ray=at_least(1),
            eval_chunk_size=at_least(1),
            grid_resolution=at_least(1),
            grid_update_every=at_least(1),
            grid_warmup_steps=at_least(0),
            occ_threshold=number_at_least(0),
            normal_perturb_std=number_at_least(0),
            backend=one_of(*BACKENDS),
            max_candidates=at_least(1),
            early_stop_eps=optional(number_at_least(0)),
            alpha_threshold=number_at_least(0),
            grad_chunk_rays=optional(at_least(1)),
            shade_at=one_of("samples", "surface"),
        )


RAY_KEYS = ("comp_rgb_fg", "opacity", "depth", "comp_normal")  # the per-ray outputs of _render_rays


def ray_box(rays_o: Tensor, rays_d: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Slab test against [-radius, radius]^3. (R, 3) x2 -> near, far (R,); far <= near: a miss."""
    d = torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0, t1 = (-radius - rays_o) / d, (radius - rays_o) / d
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


class VolumeRenderer(Renderer):
    def __init__(self, cfg: VolumeRendererConfig, geometry: Geometry, material: Material, background: Background, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.geometry, self.material, self.background = geometry, material, background
        self.radius = float(geometry.radius)
        self.step_size = math.sqrt(3.0) * 2.0 * self.radius / cfg.num_samples_per_ray
        if cfg.shade_at == "surface" and not (material.requires_normal and callable(getattr(material, "shade", None))):
            raise ConfigError(f"renderer.shade_at=surface needs a material that shades given albedos with normals "
                             f"(diffuse-with-point-light); {type(material).__name__} has no `shade`: use shade_at=samples")
        self.grid = OccupancyGrid(
            self.radius,
            cfg.grid_resolution,
            occ_threshold=cfg.occ_threshold,
            warmup_steps=cfg.grid_warmup_steps,
            update_every=cfg.grid_update_every,
            backend=cfg.backend,
        )

    def update_step(self, global_step: int) -> None:
        if self.cfg.grid_prune and self.training:
            with section("occupancy grid"):
                self.grid.update_every_n_steps(global_step, self.geometry.forward_density, self.step_size)

    # ------------------------------------------------------------------ sampling
    def sample(self, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor]:
        """Packed samples sorted by ray: ray_indices (S,) long, t (S,) midpoint distances."""
        ray_idx, t, _ = self._sample(rays_o, rays_d, keep_encoding=False)
        return ray_idx, t

    @torch.no_grad()
    def _sample(self, rays_o: Tensor, rays_d: Tensor, keep_encoding: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """sample, plus the geometry's encoding of the samples from the early-stop pass (S, E) when
        keep_encoding and the geometry has one to reuse (else None)."""
        n_rays = rays_o.shape[0]
        near, far = ray_box(rays_o, rays_d, self.radius)
        u = torch.rand(n_rays, device=rays_o.device) if (self.cfg.randomized and self.training) else torch.full((n_rays,), 0.5, device=rays_o.device)
        counts = torch.ceil((far - near) / self.step_size - u).clamp(min=0).long()
        block = max(1, self.cfg.max_candidates // self.cfg.num_samples_per_ray)
        ray_parts, t_parts, enc_parts = [], [], []
        for s in range(0, n_rays, block):
            c = counts[s : s + block]
            # Candidates as a dense (rays, max count) block, then one nonzero: 3-4x faster on CPU than
            # packing them first (repeat_interleave, per-sample gathers), and nonzero's row-major order
            # is the packed order (by ray, then along it).
            i = torch.arange(int(c.max()) if c.numel() else 0, device=rays_o.device)
            t = near[s : s + block, None] + (i + u[s : s + block, None]) * self.step_size  # (B, C)
            keep = i < c[:, None]
            if self.cfg.grid_prune:
                points = rays_o[s : s + block, None, :] + t[..., None] * rays_d[s : s + block, None, :]
                keep &= self.grid.occupied(points.reshape(-1, 3)).reshape(keep.shape)
            ray_idx, column = keep.nonzero(as_tuple=True)
            ray_idx, t = ray_idx + s, t[ray_idx, column]
            encoding = None
            if self.cfg.early_stop_eps is not None and ray_idx.numel() > 0:
                with section("early stop"):
                    keep, encoding = self.visible(rays_o, rays_d, ray_idx, t)
                ray_idx, t = ray_idx[keep], t[keep]
                encoding = encoding[keep] if (keep_encoding and encoding is not None) else None
            ray_parts.append(ray_idx)
            t_parts.append(t)
            enc_parts.append(encoding)
        # one block without an encoding (no early-stop pass ran on it) and none is reused
        encoding = torch.cat(enc_parts) if all(e is not None for e in enc_parts) else None
        return torch.cat(ray_parts), torch.cat(t_parts), encoding

    def visible(self, rays_o: Tensor, rays_d: Tensor, ray_idx: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """Packed samples (S,) -> keep (S,) bool: transmittance before the sample > early_stop_eps and
        alpha > alpha_threshold, from the density without gradients (the samples dropped carry a
        weight below early_stop_eps, so the render changes by less than that per ray); and the
        geometry's encoding of the samples (S, E), or None, for the shading pass to reuse."""
        points = (rays_o[ray_idx] + t[:, None] * rays_d[ray_idx]).clamp(-self.radius, self.radius)
        density, encoding = self.geometry.density_and_encoding(points)
        tau = density.reshape(-1) * self.step_size
        exclusive = self.exclusive_ray_sums(tau, ray_idx, int(rays_o.shape[0]))
        keep = torch.exp(-exclusive) > self.cfg.early_stop_eps
        if self.cfg.alpha_threshold > 0:
            keep &= (1.0 - torch.exp(-tau)) > self.cfg.alpha_threshold
        return keep, encoding

    # ------------------------------------------------------------------ compositing
    @staticmethod
    def exclusive_ray_sums(tau: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
        """Packed (S,) values sorted by ray -> each one's sum over the samples before it on its ray (float64)."""
        cs = torch.cumsum(tau.double(), 0)
        counts = torch.bincount(ray_indices, minlength=n_rays)
        first = (torch.cumsum(counts, 0) - counts).clamp(max=tau.shape[0] - 1)
        before_ray = cs[first] - tau[first].double()  # running total before each ray's first sample
        return cs - tau.double() - before_ray[ray_indices]

    @staticmethod
    def composite_weights(tau: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
        """tau (S,) optical thickness sigma*delta of packed samples -> weights (S,) (NeRF eq. 3)."""
        if tau.numel() == 0:
            return tau
        transmittance = torch.exp(-VolumeRenderer.exclusive_ray_sums(tau, ray_indices, n_rays)).to(tau.dtype)
        return transmittance * (1.0 - torch.exp(-tau))

    def _render_rays(self, rays_o: Tensor, rays_d: Tensor, light: Tensor, shading: str | None = None) -> dict[str, Tensor]:
        """Flat rays (R, 3), light (R, 3) -> per-ray fg colour, opacity, depth, normal, plus packed samples."""
        with section("sampling"):
            ray_idx, t, encoding = self._sample(rays_o, rays_d, keep_encoding=True)
            dirs = rays_d[ray_idx]
            # the very points the early-stop pass encoded (same arithmetic), so its encoding is theirs
            points = (rays_o[ray_idx] + t[:, None] * dirs).clamp(-self.radius, self.radius)
        return self._shade(rays_o.shape[0], ray_idx, t, dirs, points, light[ray_idx], shading=shading, encoding=encoding)

    def _shade(
        self,
        n_rays: int,
        ray_idx: Tensor,  # (S,) long, sorted, in [0, n_rays)
        t: Tensor,  # (S,) sample distances
        dirs: Tensor,  # (S, 3) unit ray directions
        points: Tensor,  # (S, 3) in the box
        light: Tensor,  # (S, 3) light positions
        jitter: Tensor | None = None,  # (S, 3) normal_perturb offsets; None: drawn here
        shading: str | None = None,  # forced material shading; None: the material's own choice
        encoding: Tensor | None = None,  # (S, E) the geometry's encoding of `points`, from the early-stop pass
    ) -> dict[str, Tensor]:
        """The differentiable part of a render: networks, material and compositing of packed samples."""
        need_normal = self.material.requires_normal or self.cfg.return_comp_normal
        with section("field"):
            reuse = {} if encoding is None else {"encoding": encoding}
            geo = self.geometry(points, output_normal=need_normal, **reuse)
        normal = geo.get("normal")
        if self.cfg.shade_at == "surface":
            shading = shading or self.material.choose_shading()  # one choice per render, as per sample
            with section("material"):
                albedo = self.material.albedo(geo["features"])
                rgb = torch.ones_like(albedo) if shading == "textureless" else albedo
            with section("compositing"):
                out = self._composite(n_rays, ray_idx, t, dirs, points, geo, rgb, normal, jitter)
                if shading != "albedo":
                    out["comp_rgb_fg"] = self._shade_surfaces(n_rays, ray_idx, geo, out, points, light, normal)
                return out
        with section("material"):
            rgb = self.material(features=geo["features"], viewdirs=dirs, positions=points, light_positions=light,
                                shading_normal=normal, shading=shading)
        with section("compositing"):
            return self._composite(n_rays, ray_idx, t, dirs, points, geo, rgb, normal, jitter)

    def _shade_surfaces(self, n_rays: int, ray_idx: Tensor, geo: dict[str, Tensor], out: dict[str, Tensor], points: Tensor,
                        light: Tensor, normal: Tensor) -> Tensor:
        """shade_at: surface. Composited albedo (R, 3), premultiplied by opacity, lit once per ray at the
        weighted mean of its samples' points and lights, with its samples' normalised weighted normal
        (a ray with no samples: zero albedo, so zero colour). -> comp_rgb_fg (R, 3)"""
        weights = self.composite_weights(geo["density"][:, 0] * self.step_size, ray_idx, n_rays)[:, None]

        def acc(values: Tensor) -> Tensor:  # (S, C) -> (R, C)
            return torch.zeros(n_rays, values.shape[1], dtype=values.dtype, device=values.device).index_add(0, ray_idx, weights * values)

        opacity = out["opacity"].clamp_min(1e-6)
        return self.material.shade(out["comp_rgb_fg"], positions=acc(points) / opacity,
                                   light_positions=acc(light) / opacity, shading_normal=F.normalize(acc(normal), dim=-1))

    def _composite(
        self, n_rays: int, ray_idx: Tensor, t: Tensor, dirs: Tensor, points: Tensor, geo: dict[str, Tensor], rgb: Tensor,
        normal: Tensor | None, jitter: Tensor | None,
    ) -> dict[str, Tensor]:
        """Packed samples' densities and colours -> per-ray outputs (NeRF eq. 3), plus the training extras."""
        weights = self.composite_weights(geo["density"][:, 0] * self.step_size, ray_idx, n_rays)
        w = weights[:, None]

        def acc(values: Tensor) -> Tensor:  # (S, C) -> (R, C), sum over each ray's samples
            return torch.zeros(n_rays, values.shape[1], dtype=values.dtype, device=values.device).index_add(0, ray_idx, w * values)

        out = {"comp_rgb_fg": acc(rgb), "opacity": acc(torch.ones_like(w)), "depth": acc(t[:, None])}
        if normal is not None:
            # threestudio's visualisation: (n + 1) / 2 scaled by opacity, i.e. black where empty
            out["comp_normal"] = (F.normalize(acc(normal), dim=-1) + 1.0) / 2.0 * out["opacity"]
        else:
            out["comp_normal"] = out["comp_rgb_fg"].new_zeros(n_rays, 3)  # 3 channels even for latent renders
        if self.training:
            out.update(weights=w, t_dirs=dirs, ray_indices=ray_idx, points=points, density=geo["density"])
            if normal is not None:
                out["normal"] = normal
            if self.cfg.return_normal_perturb:
                jitter = torch.randn_like(points) * self.cfg.normal_perturb_std if jitter is None else jitter
                out["normal_perturb"] = self.geometry((points + jitter).clamp(-self.radius, self.radius), output_normal=True)["normal"]
        return out

    def _render_rays_checkpointed(self, rays_o: Tensor, rays_d: Tensor, light: Tensor, shading: str | None = None) -> dict[str, Tensor]:
        """_render_rays with the differentiable part run per chunk of `grad_chunk_rays` rays under
        activation checkpointing. Flat rays (R, 3), light (R, 3) -> the same dict as _render_rays."""
        n_rays, chunk = rays_o.shape[0], self.cfg.grad_chunk_rays
        # Everything random or non-differentiable is drawn once for the whole image, in the ordinary
        # path's order (stratified jitter, then normal_perturb offsets), so chunking changes no sample.
        ray_idx, t = self.sample(rays_o, rays_d)
        dirs = rays_d[ray_idx]
        points = (rays_o[ray_idx] + t[:, None] * dirs).clamp(-self.radius, self.radius)
        jitter = torch.randn_like(points) * self.cfg.normal_perturb_std if self.cfg.return_normal_perturb else None
        starts = list(range(0, n_rays, chunk))
        # samples are sorted by ray, so a chunk of rays owns one contiguous range of samples
        bounds = torch.searchsorted(ray_idx, torch.tensor(starts + [n_rays], device=ray_idx.device)).tolist()
        # Python's `random` (the material's shading choice, one per render) is not in the RNG state
        # checkpoint restores: every chunk, and its recomputation, starts from the render's state
        # so the whole image gets one choice, as in the ordinary path.
        py_state, py_after = random.getstate(), [None]

        def shade_chunk(s: int, e: int, ridx: Tensor, *tensors: Tensor) -> dict[str, Tensor]:
            outer = random.getstate()
            random.setstate(py_state)
            try:
                return self._shade(e - s, ridx, *tensors, shading=shading)
            finally:
                py_after[0] = random.getstate()
                random.setstate(outer)  # a recomputation in backward leaves the caller's stream alone

        chunks: list[tuple[int, int, dict[str, Tensor] | None]] = []
        for i, s in enumerate(starts):
            e, lo, hi = min(s + chunk, n_rays), bounds[i], bounds[i + 1]
            if lo == hi:  # no samples (every ray misses or is pruned): nothing to run the networks on
                chunks.append((s, e, None))
                continue
            part = (ray_idx[lo:hi] - s, t[lo:hi], dirs[lo:hi], points[lo:hi], light[ray_idx[lo:hi]])
            part += () if jitter is None else (jitter[lo:hi],)
            chunks.append((s, e, checkpoint(shade_chunk, s, e, *part, use_reentrant=False)))
        ran = [c for _, _, c in chunks if c is not None]
        if not ran:  # no sample in the whole image: the ordinary path's behaviour
            return self._shade(n_rays, ray_idx, t, dirs, points, light[ray_idx], jitter, shading=shading)
        random.setstate(py_after[0])  # as if the material had been called once
        out = {k: torch.cat([c[k] for c in ran]) for k in ran[0] if k not in RAY_KEYS}
        out["ray_indices"] = ray_idx  # the chunks' are chunk-local
        for k in RAY_KEYS:  # an empty ray composites to 0 in every per-ray output
            out[k] = torch.cat([c[k] if c is not None else ran[0][k].new_zeros(e - s, ran[0][k].shape[1]) for s, e, c in chunks])
        return out

    # ------------------------------------------------------------------ public
    def forward(
        self,
        rays_o: Tensor,  # (B, H, W, 3)
        rays_d: Tensor,  # (B, H, W, 3) unit
        light_positions: Tensor,  # (B, 3)
        bg_color: Tensor | None = None,  # (B, H, W, 3) or (3,) or (B, 3)
        shading: str | None = None,  # force the material's shading ('albedo' | 'textureless' | 'diffuse')
        **kwargs: Any,
    ) -> dict[str, Tensor]:
        """-> comp_rgb, comp_rgb_fg, comp_rgb_bg (B, H, W, C) (C = the material's channels, 3 for
        RGB, 4 for latents); opacity, depth (B, H, W, 1);
        comp_normal (B, H, W, 3) in [0, 1] (black where empty); in training also packed per-sample
        weights (S, 1), normal (S, 3), t_dirs (S, 3), ray_indices (S,) (flat index b*H*W + i*W + j),
        points (S, 3), density (S, 1)."""
        B, H, W, _ = rays_o.shape
        flat_o, flat_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        light = light_positions[:, None, :].expand(B, H * W, 3).reshape(-1, 3)
        if self.training and self.cfg.grad_chunk_rays is not None:
            out = self._render_rays_checkpointed(flat_o, flat_d, light, shading)
        elif self.training:
            out = self._render_rays(flat_o, flat_d, light, shading)
        else:
            chunks = [
                self._render_rays(
                    flat_o[s : s + self.cfg.eval_chunk_size], flat_d[s : s + self.cfg.eval_chunk_size],
                    light[s : s + self.cfg.eval_chunk_size], shading,
                )
                for s in range(0, flat_o.shape[0], self.cfg.eval_chunk_size)
            ]
            out = {k: torch.cat([c[k] for c in chunks]) for k in RAY_KEYS}
        image = {k: out[k].reshape(B, H, W, -1) for k in RAY_KEYS}
        bg = self.background_image(rays_d, bg_color)
        image["comp_rgb_bg"] = bg
        image["comp_rgb"] = image["comp_rgb_fg"] + (1.0 - image["opacity"]) * bg
        if self.training:
            image.update({k: v for k, v in out.items() if k not in image})
        return image
