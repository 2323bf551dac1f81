"""Volume renderer against a constant-density ball with a closed-form opacity."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from framework.interfaces import Geometry
from models.backgrounds.solid_color import SolidColorBackground, SolidColorBackgroundConfig
from models.materials.no_material import NoMaterial, NoMaterialConfig
from models.renderers.volume_renderer import VolumeRenderer, VolumeRendererConfig

SIGMA, BALL = 2.0, 0.5


class Ball(Geometry):
    """density SIGMA inside |x| < BALL, 0 outside; constant features; normal x / |x|."""

    def __init__(self):
        super().__init__()
        self.radius = 1.0
        self.sigma = nn.Parameter(torch.tensor(SIGMA))
        self.feat = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

    def forward_density(self, points):
        return (self.sigma * (points.norm(dim=-1, keepdim=True) < BALL)).float()

    def forward(self, points, output_normal=False):
        out = {"density": self.forward_density(points), "features": self.feat.expand(points.shape[0], 3)}
        if output_normal:
            out["normal"] = torch.nn.functional.normalize(points, dim=-1)
        return out


def make(**kw) -> VolumeRenderer:
    cfg = VolumeRendererConfig(**{"num_samples_per_ray": 512, "randomized": False, "grid_resolution": 32, **kw})
    bg = SolidColorBackground(SolidColorBackgroundConfig(color=[0.2, 0.3, 0.4]))
    return VolumeRenderer(cfg, geometry=Ball(), material=NoMaterial(NoMaterialConfig()), background=bg)


def rays(offsets: list[float], batch: int = 2, height: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays along +x at heights y = offset (one per column), B x H x W with H != W."""
    w = len(offsets)
    o = torch.zeros(batch, height, w, 3)
    o[..., 0] = -3.0
    o[..., 1] = torch.tensor(offsets)
    d = torch.zeros(batch, height, w, 3)
    d[..., 0] = 1.0
    return o, d


def expected_opacity(y: float) -> float:
    chord = 2 * math.sqrt(max(BALL**2 - y**2, 0.0))
    return 1 - math.exp(-SIGMA * chord)


def test_opacity_matches_closed_form_and_shapes():
    ren = make(grid_prune=False).eval()
    offs = [0.0, 0.3, 0.8, -0.45]
    o, d = rays(offs)
    with torch.no_grad():
        out = ren(o, d, torch.zeros(2, 3))
    assert out["comp_rgb"].shape == (2, 3, 4, 3) and out["opacity"].shape == (2, 3, 4, 1) and out["depth"].shape == (2, 3, 4, 1)
    for j, y in enumerate(offs):
        assert out["opacity"][:, :, j].flatten() == pytest.approx([expected_opacity(y)] * 6, abs=0.01)
    # central ray enters at t = 2.5: mean depth 2.5 + int_0^1 s sigma e^{-sigma s} ds / opacity
    mean_s = (1 - math.exp(-SIGMA) * (1 + SIGMA)) / SIGMA / expected_opacity(0.0)
    assert out["depth"][0, 0, 0, 0] / out["opacity"][0, 0, 0, 0] == pytest.approx(2.5 + mean_s, abs=0.01)


def test_composite_over_background():
    ren = make(grid_prune=False).eval()
    o, d = rays([0.0, 0.2, 0.9])
    with torch.no_grad():
        out = ren(o, d, torch.zeros(2, 3))
        fg_colour = torch.sigmoid(ren.geometry.feat)
        assert torch.allclose(out["comp_rgb_fg"], out["opacity"] * fg_colour, atol=1e-5)
        assert torch.allclose(out["comp_rgb"], out["comp_rgb_fg"] + (1 - out["opacity"]) * torch.tensor([0.2, 0.3, 0.4]), atol=1e-6)
        white = ren(o, d, torch.zeros(2, 3), bg_color=torch.ones(3))
        assert torch.allclose(white["comp_rgb"], white["comp_rgb_fg"] + (1 - white["opacity"]), atol=1e-6)
        assert torch.allclose(white["comp_rgb_bg"], torch.ones(2, 3, 3, 3))


def test_pruning_gives_the_same_image():
    torch.manual_seed(0)
    ren = make(grid_prune=True)
    ren.train()
    for step in range(0, 16 * 24, 16):  # warm-up updates, each jittering a point in every cell
        ren.update_step(step)
    assert 0.0 < ren.grid.binary.float().mean() < 0.2  # the ball is ~6.5% of the box
    ren.eval()
    lin = torch.linspace(-0.6, 0.6, 25)
    o = torch.stack(torch.meshgrid(torch.full((25,), -3.0), lin, lin, indexing="ij"), -1)[0][None]  # (1, 25, 25, 3)
    d = torch.zeros_like(o)
    d[..., 0] = 1.0
    with torch.no_grad():
        n_pruned = ren.sample(o.reshape(-1, 3), d.reshape(-1, 3))[0].numel()
        pruned = ren(o, d, torch.zeros(1, 3))
        ren.cfg.grid_prune = False
        n_full = ren.sample(o.reshape(-1, 3), d.reshape(-1, 3))[0].numel()
        full = ren(o, d, torch.zeros(1, 3))
    assert n_pruned < 0.3 * n_full
    diff = (pruned["opacity"] - full["opacity"]).abs()
    # only rays grazing the ball's hard edge, through partly covered cells, may lose a little
    assert diff.mean() < 0.005 and diff.max() < 0.15


@pytest.mark.parametrize("alpha_threshold", [0.0, 0.01])
def test_early_stop_drops_the_samples_behind_an_opaque_surface(alpha_threshold):
    """A nearly opaque ball (sigma 200): the samples past its front barely count. Culling them (with
    alpha_threshold, also those of near-empty space) changes each ray by at most ~early_stop_eps."""
    lin = torch.linspace(-0.45, 0.45, 15)
    o = torch.stack(torch.meshgrid(torch.full((15,), -3.0), lin, lin, indexing="ij"), -1)[0][None]  # (1, 15, 15, 3)
    d = torch.zeros_like(o)
    d[..., 0] = 1.0
    renders, counts = {}, {}
    for eps in (None, 1e-4):
        ren = make(grid_prune=False, early_stop_eps=eps, alpha_threshold=alpha_threshold).eval()
        with torch.no_grad():
            ren.geometry.sigma.fill_(200.0)
            counts[eps] = ren.sample(o.reshape(-1, 3), d.reshape(-1, 3))[0].numel()
            renders[eps] = ren(o, d, torch.zeros(1, 3))
    # the far side of the ball and the space behind it are gone; with alpha_threshold also the empty space before it
    assert counts[1e-4] < (0.6 if alpha_threshold == 0 else 0.1) * counts[None]
    for key in ("opacity", "comp_rgb"):
        assert (renders[1e-4][key] - renders[None][key]).abs().max() < 2e-4


def test_early_stop_keeps_gradients_where_they_matter():
    """Training renders with culling: the gradient on the colour features is the full render's to within
    early_stop_eps per ray (each ray's dropped weights sum to less than that), and fewer samples ran."""
    o, d = rays([0.0, 0.2, 0.4])
    grads, samples = {}, {}
    for eps in (None, 1e-4):
        ren = make(grid_prune=False, early_stop_eps=eps).train()
        with torch.no_grad():
            ren.geometry.sigma.fill_(40.0)
        out = ren(o, d, torch.zeros(2, 3))
        out["comp_rgb_fg"].sum().backward()
        grads[eps], samples[eps] = ren.geometry.feat.grad.clone(), out["ray_indices"].numel()
    n_rays = o.shape[0] * o.shape[1] * o.shape[2]
    assert samples[1e-4] < 0.6 * samples[None]
    assert (grads[1e-4] - grads[None]).abs().max() <= n_rays * 1e-4
    assert grads[None].abs().min() > 1.0  # not vacuous: the features get a real gradient


def test_gradients_reach_geometry_and_training_outputs():
    ren = make(grid_prune=False, randomized=True).train()
    o, d = rays([0.0, 0.25])
    out = ren(o, d, torch.zeros(2, 3))
    s = out["weights"].shape[0]
    assert out["normal"].shape == (s, 3) and out["t_dirs"].shape == (s, 3) and out["ray_indices"].shape == (s,)
    out["comp_rgb"].sum().backward()
    assert ren.geometry.sigma.grad.abs() > 0 and ren.geometry.feat.grad.abs().sum() > 0


def test_forced_shading_reaches_the_material_on_every_path():
    from models.materials.diffuse_with_point_light import DiffuseWithPointLight, DiffuseWithPointLightConfig

    material = DiffuseWithPointLight(DiffuseWithPointLightConfig(ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=0.0))
    bg = SolidColorBackground(SolidColorBackgroundConfig(color=[0.2, 0.3, 0.4]))
    o, d = rays([0.0, 0.2], batch=1)
    light = torch.tensor([[-3.0, 0.0, 0.0]])
    albedo_colour = torch.sigmoid(torch.tensor([0.5, -1.0, 2.0]))
    for chunk in (None, 2):
        renderer = VolumeRenderer(VolumeRendererConfig(num_samples_per_ray=256, randomized=False, grid_resolution=32,
                                                       grid_prune=False, grad_chunk_rays=chunk),
                                  geometry=Ball(), material=material, background=bg).train()
        out = renderer(o, d, light, shading="albedo")
        expected = albedo_colour * out["opacity"] + (1 - out["opacity"]) * torch.tensor([0.2, 0.3, 0.4])
        assert torch.allclose(out["comp_rgb"], expected, atol=1e-5), chunk
        shaded = renderer(o, d, light, shading="diffuse")["comp_rgb"]
        assert not torch.allclose(shaded, out["comp_rgb"], atol=1e-3)


def packed_candidates(ren: VolumeRenderer, rays_o: torch.Tensor, rays_d: torch.Tensor, u: torch.Tensor):
    """The reference: every ray's candidates packed one after the other, then the grid test (the
    renderer's sampling before it built them as a dense block)."""
    from models.renderers.volume_renderer import ray_box

    near, far = ray_box(rays_o, rays_d, ren.radius)
    counts = torch.ceil((far - near) / ren.step_size - u).clamp(min=0).long()
    ray_idx = torch.repeat_interleave(torch.arange(rays_o.shape[0]), counts)
    i = torch.arange(ray_idx.shape[0]) - (torch.cumsum(counts, 0) - counts)[ray_idx]
    t = near[ray_idx] + (i + u[ray_idx]) * ren.step_size
    if ren.cfg.grid_prune:
        keep = ren.grid.occupied(rays_o[ray_idx] + t[:, None] * rays_d[ray_idx])
        ray_idx, t = ray_idx[keep], t[keep]
    return ray_idx, t


@pytest.mark.parametrize("grid_prune", [True, False])
@pytest.mark.parametrize("max_candidates", [2**22, 1000])  # one block, and many (a block of 15 rays)
def test_sampling_equals_the_packed_reference_exactly(grid_prune, max_candidates):
    torch.manual_seed(1)
    ren = make(grid_prune=grid_prune, num_samples_per_ray=64, randomized=True, max_candidates=max_candidates)
    ren.train()
    for step in range(0, 16 * 8, 16):
        ren.update_step(step)
    n = 700
    rays_o = torch.randn(n, 3) * 0.3 + torch.tensor([-2.5, 0.0, 0.0])
    rays_d = torch.nn.functional.normalize(torch.randn(n, 3) * 0.4 + torch.tensor([1.0, 0.0, 0.0]), dim=-1)
    rays_d[:50] = -rays_d[:50]  # some rays miss the box: no candidates at all
    state = torch.get_rng_state()
    ray_idx, t = ren.sample(rays_o, rays_d)
    torch.set_rng_state(state)
    want_idx, want_t = packed_candidates(ren, rays_o, rays_d, torch.rand(n))
    assert 0 < ray_idx.numel() and (grid_prune or ray_idx.numel() > 10 * n)
    assert torch.equal(ray_idx, want_idx) and torch.equal(t, want_t)


class SoftBallWithNoisyInside(Geometry):
    """A ball whose density ramps up over `ramp` inside its surface, so light reaches into it; inside the
    ramp the normals are random (a plateau's gradient is noise), on the ramp they point outward."""

    def __init__(self, ramp: float = 0.15, peak: float = 12.0):
        super().__init__()
        self.radius, self.ramp, self.peak = 1.0, ramp, peak
        self.feat = nn.Parameter(torch.tensor([0.4, -0.2, 0.1]))

    def forward_density(self, points):
        depth = BALL - points.norm(dim=-1, keepdim=True)
        return self.peak * (depth / self.ramp).clamp(0.0, 1.0)

    def forward(self, points, output_normal=False):
        out = {"density": self.forward_density(points), "features": self.feat.expand(points.shape[0], 3)}
        if output_normal:
            inside = (BALL - points.norm(dim=-1, keepdim=True)) > self.ramp
            g = torch.Generator().manual_seed(0)
            noise = torch.nn.functional.normalize(torch.randn(points.shape[0], 3, generator=g), dim=-1)
            out["normal"] = torch.where(inside, noise, torch.nn.functional.normalize(points, dim=-1))
        return out


def lit(shade_at: str, geometry: Geometry) -> VolumeRenderer:
    from models.materials.diffuse_with_point_light import DiffuseWithPointLight, DiffuseWithPointLightConfig

    material = DiffuseWithPointLight(DiffuseWithPointLightConfig(
        ambient_light_color=[0.4] * 3, diffuse_light_color=[0.6] * 3, ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=0.0))
    cfg = VolumeRendererConfig(num_samples_per_ray=512, randomized=False, grid_prune=False, shade_at=shade_at)
    bg = SolidColorBackground(SolidColorBackgroundConfig(color=[1.0, 1.0, 1.0]))
    return VolumeRenderer(cfg, geometry=geometry, material=material, background=bg)


@pytest.mark.parametrize("shading", ["diffuse", "textureless", "albedo"])
def test_surface_shading_is_per_sample_shading_on_a_hard_surface(shading):
    """A hard ball (every ray's weight on its first samples): lighting once per ray at the composited
    surface gives the per-sample image, under each of the material's shading choices."""
    o, d = rays([0.0, 0.2, 0.35, 0.7])
    light = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 1.0, 0.5]])
    with torch.no_grad():
        images = [lit(where, Ball()).eval()(o, d, light, shading=shading)["comp_rgb"] for where in ("samples", "surface")]
    ball = Ball()
    ball.sigma.data.fill_(2000.0)
    with torch.no_grad():
        hard = [lit(where, ball).eval()(o, d, light, shading=shading)["comp_rgb"] for where in ("samples", "surface")]
    assert torch.allclose(hard[0], hard[1], atol=2e-3)
    if shading == "albedo":  # no lighting at all: the same composite whatever the density
        assert torch.allclose(images[0], images[1], atol=1e-6)


def test_surface_shading_recovers_the_surface_light_under_noisy_interior_normals():
    """Light reaching into a soft surface: per-sample shading mixes in the noisy interior normals and
    comes out darker than the surface's true shading; shading at the surface does not."""
    geo = SoftBallWithNoisyInside()
    o, d = rays([0.0])
    light = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])  # a head-light: the true shading is 1.0
    with torch.no_grad():
        per_sample = lit("samples", geo).eval()(o, d, light, shading="textureless")
        surface = lit("surface", geo).eval()(o, d, light, shading="textureless")
    opacity = per_sample["opacity"][0, 0, 0, 0]
    assert opacity > 0.99
    per_sample_light = per_sample["comp_rgb_fg"][0, 0, 0] / opacity
    surface_light = surface["comp_rgb_fg"][0, 0, 0] / opacity
    assert (per_sample_light < 0.9).all()  # interior noise darkens it
    assert surface_light == pytest.approx([1.0, 1.0, 1.0], abs=0.05)


def test_surface_shading_trains_albedo_and_normals_and_matches_chunked():
    torch.manual_seed(0)
    from models.encodings.hash_grid import HashGridConfig
    from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig

    def field():
        torch.manual_seed(0)
        enc = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.5, backend="torch")
        geo = ImplicitVolume(ImplicitVolumeConfig(radius=1.0, pos_encoding=enc, density_blob_std=0.5))
        with torch.no_grad():
            geo.encoding.table.normal_(0, 0.5)
        return geo

    o, d = rays([0.0, 0.1, 0.3, -0.2], height=2)
    light = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 1.0, 0.5]])
    grads = []
    for chunk in (None, 3):
        ren = lit("surface", field())
        ren.cfg.grad_chunk_rays = chunk
        ren.train()
        out = ren(o, d, light, shading="diffuse")
        out["comp_rgb"].square().sum().backward()
        grads.append((out["comp_rgb"].detach(), ren.geometry.encoding.table.grad.clone(), ren.geometry.feature_network[0].weight.grad.clone()))
    assert grads[0][1].abs().sum() > 0 and grads[0][2].abs().sum() > 0
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_surface_shading_needs_a_material_that_shades():
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="shade_at=surface"):
        make(shade_at="surface")
