"""VolumeRenderer's `grad_chunk_rays`: chunked, checkpointed training renders equal the ordinary
path (outputs and every parameter gradient) and keep far less for backward."""
from __future__ import annotations

import random

import pytest
import torch

from framework.cameras import get_rays, orbit_c2w
from framework.regularisers import emptiness_loss, orientation_loss
from models.backgrounds.neural_env_map import NeuralEnvironmentMapBackground, NeuralEnvironmentMapBackgroundConfig
from models.encodings.hash_grid import HashGridConfig
from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig
from models.materials.diffuse_with_point_light import DiffuseWithPointLight, DiffuseWithPointLightConfig
from models.renderers.volume_renderer import VolumeRenderer, VolumeRendererConfig


def make_renderer(samples: int = 64, backend: str = "torch", **kw) -> VolumeRenderer:
    """A blob ImplicitVolume (small hash grid, analytic normals), Lambertian material with its random
    shading choice on, a neural environment map; the occupancy grid warmed up so pruning is on."""
    torch.manual_seed(0)
    enc = HashGridConfig(n_levels=4, log2_hashmap_size=12, per_level_scale=2.0, backend=backend)
    geo = ImplicitVolume(ImplicitVolumeConfig(radius=1.0, pos_encoding=enc, mlp_hidden_dims=32))
    with torch.no_grad():  # a non-trivial field: the hash table starts near zero
        geo.encoding.parameters().__next__().normal_(0.0, 0.5)
    mat = DiffuseWithPointLight(DiffuseWithPointLightConfig(ambient_only_steps=0, diffuse_prob=0.75, textureless_prob=0.5))
    bg = NeuralEnvironmentMapBackground(NeuralEnvironmentMapBackgroundConfig())
    cfg = VolumeRendererConfig(num_samples_per_ray=samples, grid_resolution=32, randomized=True, **kw)
    ren = VolumeRenderer(cfg, geometry=geo, material=mat, background=bg).train()
    ren.update_step(0)
    return ren


def camera_rays(res: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rays_o, rays_d (B, res, res, 3) of orbit cameras at distance 2.5, light (B, 3) at the cameras."""
    c2w = orbit_c2w(torch.tensor([15.0, 40.0])[:batch], torch.tensor([-30.0, 100.0])[:batch], torch.full((batch,), 2.5))
    rays_o, rays_d = get_rays(c2w, torch.deg2rad(torch.full((batch,), 45.0)), res, res)
    return rays_o, rays_d, c2w[:, :3, 3]


def loss_of(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Touches the image and every per-sample output a method's losses read."""
    image = (out["comp_rgb"] - 0.3).square().mean() + out["depth"].mean() + out["comp_normal"].mean()
    per_sample = orientation_loss(out) + emptiness_loss(out) + 1e-3 * out["density"].mean()
    smooth = (out["normal"] - out["normal_perturb"]).square().sum(-1).mean()
    return image + per_sample + smooth


def render_and_grads(ren: VolumeRenderer, chunk: int | None, seed: int, res: int = 12):
    ren.cfg.grad_chunk_rays = chunk
    ren.zero_grad(set_to_none=True)
    rays_o, rays_d, light = camera_rays(res)
    torch.manual_seed(seed)
    random.seed(seed)
    out = ren(rays_o, rays_d, light)
    loss_of(out).backward()
    after = (random.random(), torch.rand(1).item())  # both RNG streams end where the ordinary path leaves them
    grads = {n: p.grad.clone() for n, p in ren.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads, after


@pytest.mark.parametrize("seed,backend", [(0, "torch"), (1, "torch"), (2, "auto")])  # auto: the C++ kernel on CPU
def test_chunked_render_matches_outputs_and_gradients(seed, backend):
    ren = make_renderer(backend=backend, return_normal_perturb=True)
    ref_out, ref_grads, ref_after = render_and_grads(ren, None, seed)
    n_rays = 2 * 12 * 12
    assert ref_out["weights"].shape[0] > n_rays  # pruning left many samples to chunk over
    prefixes = {n.split(".")[0] + "." + n.split(".")[1] for n in ref_grads}
    assert {"geometry.encoding", "geometry.density_network", "geometry.feature_network", "background.network"} <= prefixes
    for chunk in (7, 100, 288, 1000):  # 7 and 100 do not divide the 288 rays; 1000 is one chunk
        out, grads, after = render_and_grads(ren, chunk, seed)
        assert out.keys() == ref_out.keys()
        for k, v in ref_out.items():
            assert out[k].shape == v.shape, k
            torch.testing.assert_close(out[k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k} (chunk {chunk}): {m}")
        assert grads.keys() == ref_grads.keys()
        for n, g in ref_grads.items():
            assert g.abs().sum() > 0, n
            torch.testing.assert_close(grads[n], g, rtol=1e-4, atol=1e-7, msg=lambda m: f"grad {n} (chunk {chunk}): {m}")
        assert after == ref_after


def saved_bytes_for_backward(ren: VolumeRenderer, res: int, chunk: int | None) -> int:
    """Bytes of the tensors autograd saves for backward during a training render's forward (and the
    loss's), counted once per storage. Checkpointed chunks save theirs behind their own hooks, so
    what this counts is what the forward really keeps for backward."""
    ren.cfg.grad_chunk_rays = chunk
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    rays_o, rays_d, light = camera_rays(res, batch=1)
    torch.manual_seed(0)
    random.seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = ren(rays_o, rays_d, light)
        loss = loss_of(out)
    loss.backward()
    return sum(storages.values())


def test_chunked_render_keeps_far_less_for_backward():
    """The autograd-saved memory, a proxy for peak memory on CPU: at 48^2 rays and 96 samples per ray,
    the ordinary path keeps every sample's activations (measured 36.9 MB); chunks of 256 rays keep only
    each chunk's inputs and outputs plus what the loss saves (measured 1.55 MB, 4.2%). Asserted: under
    15%, so an option that does nothing fails. The backward's peak adds one chunk's recomputed graph
    (here 1/9 of the ordinary path's), which this proxy does not count."""
    ren = make_renderer(samples=96, return_normal_perturb=True)
    full = saved_bytes_for_backward(ren, 48, None)
    chunked = saved_bytes_for_backward(ren, 48, 256)
    assert full > 5e6
    assert chunked < 0.15 * full, (chunked, full)


def test_every_method_sets_it_as_a_renderer_key():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    import launch  # noqa: F401  (registers the schemas, as launch.py does)
    from framework.config import instantiate
    from tests.test_configs import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="dreamfusion-toy", overrides=["system.renderer.grad_chunk_rays=4096"]).system
        with pytest.raises(ConfigCompositionException, match="grad_chunk_rays") as err:  # typed: refused while composing
            compose(config_name="dreamfusion-toy", overrides=["system.renderer.grad_chunk_rays=many"])
        assert isinstance(err.value.__cause__, ValidationError)
    parts = {k: instantiate(cfg[k]) for k in ("geometry", "material", "background")}
    assert instantiate(cfg.renderer, **parts).cfg.grad_chunk_rays == 4096
    with pytest.raises(ValueError, match="grad_chunk_rays"):
        VolumeRenderer(VolumeRendererConfig(grad_chunk_rays=0), **parts)


@pytest.mark.parametrize("training", [True, False])
def test_the_early_stop_pass_encoding_is_reused_with_the_same_outputs_and_gradients(training, monkeypatch):
    """With early stop on, the shading pass takes the hash-grid encoding the early-stop pass computed
    (the C++ kernel's interpolation runs once per sample, not twice) and renders, and trains, exactly
    as when it interpolates again."""
    from models.encodings import hash_grid

    ren = make_renderer(backend="auto", early_stop_eps=1e-4, alpha_threshold=0.01, return_normal_perturb=training)
    assert ren.geometry.encoding.reusable_output  # the C++ kernel: the only backend whose output is reused
    ren.train(training)
    interp_rows = []
    kernel = hash_grid.load_cpp_kernel()
    real_interp = kernel.interp

    class Counting:  # the kernel module's attributes are read-only: wrap it
        def __getattr__(self, name):
            return getattr(kernel, name)

        def interp(self, x, *args):
            interp_rows.append(x.shape[0])
            return real_interp(x, *args)

    monkeypatch.setattr(hash_grid, "load_cpp_kernel", lambda: Counting())

    def render(reuse: bool):
        if not reuse:
            monkeypatch.setattr(ren.geometry, "density_and_encoding", lambda p: (ren.geometry.forward_density(p), None))
        interp_rows.clear()
        ren.zero_grad(set_to_none=True)
        rays_o, rays_d, light = camera_rays(12)
        torch.manual_seed(3)
        random.seed(3)
        with torch.set_grad_enabled(training):
            out = ren(rays_o, rays_d, light)
            if training:
                loss_of(out).backward()
        grads = {n: p.grad.clone() for n, p in ren.named_parameters() if p.grad is not None}
        return {k: v.detach() for k, v in out.items()}, grads, list(interp_rows)

    out, grads, rows = render(reuse=True)
    ref_out, ref_grads, ref_rows = render(reuse=False)
    # without reuse every shaded sample is interpolated a second time (and only those)
    assert sum(ref_rows) > sum(rows)
    if training:
        assert sum(ref_rows) - sum(rows) == out["weights"].shape[0]
    assert out.keys() == ref_out.keys() and grads.keys() == ref_grads.keys()
    for k, v in ref_out.items():
        assert torch.equal(out[k], v), k
    for n, g in ref_grads.items():
        assert torch.equal(grads[n], g), n
