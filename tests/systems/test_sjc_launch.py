"""sjc-toy end to end through launch.py: train (2 steps) + test + export + scoring; SJC's parts."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import TINY_TOY_RUN, launch

SJC_TINY = [
    *TINY_TOY_RUN,
    "system.geometry.grid_size=[16,16,16]",
    "system.guidance.n_samples=2",
    # the emptiness weight steps up at step 1, so both branches of its schedule run
    "system.loss.lambda_emptiness=[[0,10.0],[1,100.0]]",
    "system.emptiness_scale=5.0",
]


def test_sjc_toy_two_steps_train_test_export(tmp_path, toy_cache):
    run_dir = tmp_path / "sjc"
    result = launch(["--config-name", "sjc-toy", *SJC_TINY, f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    for expected in ["ckpts/last.ckpt", "save/it2-val-0.png", "save/it2-test.mp4", "save/export/model.obj",
                     "save/export/texture_kd.png", "metrics.json"]:  # fmt: skip
        assert expected in files, f"{expected} missing from {sorted(files)}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("iou", "chamfer", "colour_error"):
        assert key in metrics and 0 <= metrics[key] < 10
    log = (run_dir / "csv_logs/metrics.csv").read_text()
    assert "train/loss_emptiness" in log and "train/loss_sds" in log and "train/lambda_emptiness" in log
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"]["geometry.grid"].shape == (1, 4, 16, 16, 16)
    assert not any(k.startswith("guidance.") for k in ckpt["state_dict"])
    assert "Adamax" in (run_dir / "configs/config.yaml").read_text()


def test_sjc_system_parts_and_emptiness_scale(tmp_path):
    from hydra import compose, initialize_config_dir

    import launch as _  # noqa: F401  (registers the schemas and resolvers)
    from framework.config import instantiate
    from framework.regularisers import emptiness_loss

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="sjc-toy", overrides=[
            "system.guidance.prior.n_exemplars=16", "system.guidance.prior.supersample=1", "system.emptiness_scale=3.0",
            "system.loss.lambda_emptiness=1.0", "system.geometry.grid_size=[8,8,8]",
        ])  # fmt: skip
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    assert type(system.geometry).__name__ == "VolumeGrid" and type(system.guidance).__name__ == "SJCGuidance"
    assert system.render_channels() == 3
    out = {"comp_rgb": torch.rand(1, 2, 2, 3), "weights": torch.rand(50, 1), "opacity": torch.rand(1, 2, 2, 1), "normal": torch.randn(50, 3), "t_dirs": torch.randn(50, 3)}
    system.guidance.forward = lambda *a, **k: {"loss_sds": torch.tensor(0.0)}
    losses = system.compute_losses({}, out)
    torch.testing.assert_close(losses["loss_emptiness"], emptiness_loss(out, scale=3.0))
    optimizer = system.configure_optimizers()
    assert type(optimizer).__name__ == "Adamax"


def test_latent_field_decodes_images_and_bakes_rgb_by_the_linear_map(tmp_path):
    """SJC's SD set-up (4-channel latent grid, textured latent background, no normals) in the toy
    system: images go through the prior's decode, export maps latents to RGB per point."""
    from hydra import compose, initialize_config_dir

    import launch as _  # noqa: F401
    from framework.config import instantiate
    from systems.sjc import SD_LATENT_RGB_FACTORS

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="sjc-toy", overrides=[
            "system.guidance.prior.n_exemplars=16", "system.guidance.prior.supersample=1",
            "system/material=no-material", "system.material.n_output_dims=4", "system.material.color_activation=none",
            "system/background=textured", "system.background.n_output_dims=4", "system.background.height=4",
            "system.background.width=4", "system.background.color_activation=none",
            "system.geometry.n_feature_dims=4", "system.geometry.normal_type=null", "system.geometry.grid_size=[12,12,12]",
            "system.geometry.isosurface_resolution=32", "system.geometry.isosurface_threshold=2.0",
        ])  # fmt: skip
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    assert system.render_channels() == 4
    decoded = []

    def fake_decode(latents):  # (B, 4, h, w) -> (B, 2h, 2w, 3), like a VAE with scale factor 2
        decoded.append(latents.shape)
        return torch.rand(latents.shape[0], latents.shape[2] * 2, latents.shape[3] * 2, 3)

    system.guidance.prior.decode = fake_decode
    rays_o = torch.tensor([1.6, 0.0, 0.0]).expand(1, 8, 8, 3)
    rays_d = torch.nn.functional.normalize(-rays_o + 0.2 * torch.randn(1, 8, 8, 3), dim=-1)
    out = system.eval().render({"rays_o": rays_o, "rays_d": rays_d, "light_position": rays_o[:, 0, 0]})
    assert out["comp_rgb"].shape == (1, 8, 8, 4)
    image = system._visual(out)
    assert decoded == [(1, 4, 8, 8)] and image.shape == (16, 48, 3)  # decoded | normal | opacity, upsampled
    with torch.no_grad():
        system.geometry.grid[:, 1:] = torch.tensor([0.5, -0.2, 0.1, 0.3]).view(1, 4, 1, 1, 1)
    mesh, albedo = system.export_mesh()
    assert mesh.n_faces > 0
    colour = albedo(mesh.vertices[:5])
    expected = ((torch.tensor([0.5, -0.2, 0.1, 0.3]) @ torch.tensor(SD_LATENT_RGB_FACTORS) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(colour, expected.expand(5, 3), rtol=1e-4, atol=1e-4)
