"""The LightningModule every method builds on.

A system composes its parts (geometry, material, background, renderer, prompt processor,
guidance) and says how one step renders and which loss terms it produces. This base class
does the rest the same way for every method:

- calls `update_step(step)` on every owned component, explicitly, before each step;
- sums `lambda_<name>(step) * loss_<name>` (framework.loss_weights) and logs every term;
- builds the optimizer from config (framework.optim);
- saves validation images, the test turntable video, and exports the textured mesh, then
  scores it when the system has an evaluator (the toy world).

With `initialise_for_training` and `export` it fills what the runner asks of every system
(framework/interfaces.py `RunnableSystem`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from framework.interfaces import Component, Evaluator, Mesh
from framework.loss_weights import LossWeights
from framework.media_logging import log_image, log_turntable
from framework.mesh_cleanup import clean_mesh
from framework.optim import OptimizerConfig, build_optimizer
from framework.step_times import section
from framework.value_checks import at_least, between, check_entries, check_fields, number_at_least, one_of, optional, schedule_of
from framework.video import image_grid, save_image, write_video


@dataclass
class ExportConfig:
    texture_size: int = 1024
    """Side of the baked albedo texture in texels."""
    glb: bool = True
    """Also write model.glb (glTF 2.0 binary: +y up, vertex normals, the sRGB texture)."""
    max_faces: Optional[int] = 30000
    """Decimate the exported mesh to at most this many faces (null: keep all; framework/mesh_cleanup.py)."""
    min_component_fraction: float = 0.05
    """Drop disconnected pieces with fewer than this fraction of the faces (0: keep every piece)."""
    smooth_iterations: int = 0
    """Rounds of Taubin smoothing (a shrink and an inflate step each) of the surface before decimation, against
    marching-cubes bumps (0: off; framework/mesh_cleanup.py)."""
    up_axis: str = "+z"
    """The OBJ's up axis: "+z" (world coordinates) or "+y" (world (x, y, z) written as (x, z, -y), as the GLB
    always is); the toy evaluator scores either in world coordinates."""

    def __post_init__(self) -> None:
        check_fields(self, texture_size=at_least(1), max_faces=optional(at_least(4)),
                     min_component_fraction=between(0, 1), smooth_iterations=at_least(0),
                     up_axis=one_of("+z", "+y"))


@dataclass
class BaseSystemConfig:
    loss: Dict[str, Any] = field(default_factory=dict)
    """lambda_<term>: Schedule for each loss term (framework.schedule), >= 0; null drops the term."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluator: Any = None
    """Scores the exported mesh against a known truth (toy world), or null."""

    def __post_init__(self) -> None:
        check_entries(self, "loss", optional(schedule_of(number_at_least(0))))


def is_watertight(mesh: Mesh) -> bool:
    """Every edge shared by exactly two consistently wound faces (trimesh's test), on the shared-vertex mesh."""
    import trimesh

    if mesh.n_faces == 0:
        return False
    tm = trimesh.Trimesh(mesh.vertices.detach().cpu().numpy(), mesh.faces.cpu().numpy(), process=False)
    return bool(tm.is_watertight)


def scene_warning(opacity: Tensor, step: int) -> str | None:
    """A collapsed or exploded scene, told at the validation that sees it, not after the last step.
    opacity: every validation pixel's accumulated opacity (flattened)."""
    mean, filled = float(opacity.mean()), float((opacity > 0.99).float().mean())
    if mean < 1e-3:
        return (f"step {step}: the scene is empty (mean opacity of the validation views {mean:.2g}); nothing will "
                "be exported. The learning rates (system.optimizer) may be too high or the density bias too low.")
    if filled > 0.98:
        return (f"step {step}: the density fills the validation views ({filled:.0%} of pixels opaque); the scene "
                "has exploded. Lower the learning rates (system.optimizer.lr and .params) or raise the sparsity weight.")
    return None


class BaseSystem(pl.LightningModule):
    def __init__(self, cfg: BaseSystemConfig, run_dir: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else Path(".")
        self._test_frames: list[tuple[int, np.ndarray]] = []
        self._val_images: list[tuple[int, np.ndarray]] = []
        self.metrics: dict[str, float] = {}
        self.loss_terms: dict[str, float] = {}
        self.latest_render: Optional[Tensor] = None  # the last training step's comp_rgb (B, H, W, C), detached
        self._val_opacity: list[Tensor] = []

    # ---- what a method provides -------------------------------------------------------------
    def owned_components(self) -> list[Component]:
        """Every component whose `update_step` must be called each training step."""
        raise NotImplementedError

    def producible_losses(self) -> list[str]:
        """Names of every loss term this system can produce (without the loss_ prefix)."""
        raise NotImplementedError

    def render(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def compute_losses(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """{loss_<name>: scalar} for one training batch, given the render `out`."""
        raise NotImplementedError

    def export_mesh(self) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
        """The mesh to export and its albedo function (points (N, 3) -> (N, 3) in [0, 1])."""
        raise NotImplementedError

    @property
    def evaluator(self) -> Optional[Evaluator]:
        return None

    @torch.no_grad()
    def preview_mesh(self, resolution: int) -> tuple[Mesh, Optional[Tensor]]:
        """The live viewer's coarse surface and its vertex colours ((V, 3) in [0, 1], or None when the
        material's albedo is not RGB): the `geometry`'s `preview_mesh`, coloured by the `material`'s albedo
        at the vertices. A system without those two parts overrides this."""
        geometry, material = getattr(self, "geometry"), getattr(self, "material", None)
        mesh = geometry.preview_mesh(resolution)
        mesh = Mesh(vertices=mesh.vertices.detach(), faces=mesh.faces)
        if material is None or mesh.vertices.shape[0] == 0:
            return mesh, None
        colours = material.albedo(geometry.export_features(mesh.vertices))
        return mesh, colours.clamp(0, 1) if colours.shape[-1] == 3 else None

    def initialise_for_training(self) -> None:
        """Called by the runner before a fresh training run (not on resume or weights init): a later
        stage takes over an earlier stage's result here (Magic3D refine). Default: nothing."""

    # ---- shared machinery --------------------------------------------------------------------
    def setup_losses(self) -> None:
        self.loss_weights = LossWeights(self.cfg.loss, self.producible_losses())

    @property
    def save_dir(self) -> Path:
        return self.run_dir / "save"

    def configure_optimizers(self):
        return build_optimizer(self, self.cfg.optimizer)

    def update_step(self, step: int) -> None:
        for component in self.owned_components():
            component.update_step(step)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "update_step"):
            datamodule.update_step(self.global_step)
        self.update_step(self.global_step)

    def logged_guidance_losses(self, guidance_out: dict[str, Tensor]) -> dict[str, Tensor]:
        """A guidance's output -> its loss_<name> terms; its other entries (diagnostics) are logged."""
        for key, value in guidance_out.items():
            if not key.startswith("loss_"):
                self.log(f"train/guidance_{key}", float(value), on_step=True, on_epoch=False)
        return {k: v for k, v in guidance_out.items() if k.startswith("loss_")}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.global_step == 0 and self.trainer.world_size > 1:
            self._report_rank_cameras(batch)
        with section("render"):
            out = self.render(batch)
        self.latest_render = out["comp_rgb"].detach()  # shown by the live viewer (framework/live_viewer.py)
        with section("losses"):
            losses = self.compute_losses(batch, out)
        total, logged = self.loss_weights.combine(losses, self.global_step)
        self.loss_terms = {k: v for k, v in logged.items() if k.startswith("loss_")}  # read by NonFiniteGuard
        for key, value in logged.items():
            self.log(f"train/{key}", value, prog_bar=key.startswith("loss_"), on_step=True, on_epoch=False)
        self.log("train/loss", total.detach(), prog_bar=False, on_step=True, on_epoch=False)
        return total

    def _report_rank_cameras(self, batch: dict[str, Any]) -> None:
        """A multi-process run's first step: every rank must have drawn its own cameras (seed + rank)."""
        azimuths = self.all_gather(batch["azimuth"].detach().float()).reshape(self.trainer.world_size, -1)
        distinct = len({tuple(row.tolist()) for row in azimuths}) == self.trainer.world_size
        self.log("train/ranks_distinct_cameras", float(distinct), on_step=True, on_epoch=False, rank_zero_only=True)
        if self.trainer.is_global_zero:
            shown = "; ".join(f"rank {r}: {', '.join(f'{a:.1f}' for a in row.tolist())}" for r, row in enumerate(azimuths))
            print(f"first-batch camera azimuths by rank ({'all different' if distinct else 'SAME on some ranks'}): {shown}",
                  flush=True)

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with section("render"):
            out = self.render(batch)
        if self.trainer.sanity_checking:
            return
        self._val_opacity.append(out["opacity"].detach().float().cpu().flatten())
        self._val_images.append((int(batch["index"]), self._visual(out)))

    def on_validation_epoch_start(self) -> None:
        self._val_opacity, self._val_images = [], []

    def on_validation_epoch_end(self) -> None:
        for index, image in self._views_on_rank_zero(self._val_images):
            self._save_image(f"it{self.global_step}-val-{index}.png", image)
            log_image(self.trainer.loggers, f"val/view{index}", image, self.global_step)
        if self._val_opacity and self.trainer.is_global_zero:
            warning = scene_warning(torch.cat(self._val_opacity), self.global_step)
            if warning:
                print(f"\nwarning: {warning}", flush=True)
        self._val_opacity, self._val_images = [], []

    @torch.no_grad()
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with section("render"):
            out = self.render(batch)
        self._test_frames.append((int(batch["index"]), self._visual(out)))

    def on_test_epoch_start(self) -> None:
        self._test_frames = []

    def on_test_epoch_end(self) -> None:
        frames = self._views_on_rank_zero(self._test_frames)
        for index, frame in frames:
            self._save_image(f"it{self.global_step}-test/{index:04d}.png", frame)
        if frames:
            path = self.save_dir / f"it{self.global_step}-test.mp4"
            write_video([frame for _, frame in frames], path, fps=30)
            log_turntable(self.trainer.loggers, "test/turntable", [frame for _, frame in frames], path, self.global_step)
        self._test_frames = []

    def _views_on_rank_zero(self, views: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        """(index, image) of every rank's share of the views, in order, on rank 0 ([] on the others).
        A multi-process run splits the views across ranks (Lightning's DistributedSampler pads the
        shares to one length by repeating views; the repeats are dropped here)."""
        if self.trainer.world_size == 1:
            return sorted(views, key=lambda v: v[0])
        indices = self.all_gather(torch.tensor([i for i, _ in views])).reshape(-1)
        images = self.all_gather(torch.from_numpy(np.stack([image for _, image in views])))
        images = images.reshape(-1, *images.shape[-3:])
        if not self.trainer.is_global_zero:
            return []
        unique = {int(i): images[k].cpu().numpy() for k, i in enumerate(indices)}
        return sorted(unique.items())

    def _visual(self, out: dict[str, Tensor]) -> np.ndarray:
        """RGB | normal | opacity side by side, (H, 3W, 3) float in [0, 1]."""
        panels = [out["comp_rgb"][0]]
        if "comp_normal" in out:
            panels.append(out["comp_normal"][0])
        panels.append(out["opacity"][0].expand(-1, -1, 3))
        return image_grid([p.detach().float().clamp(0, 1).cpu().numpy() for p in panels])

    def _save_image(self, name: str, image: np.ndarray) -> None:
        if self.trainer is not None and not self.trainer.is_global_zero:
            return
        path = self.save_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, image)

    @torch.no_grad()
    def export(self) -> dict[str, float]:
        """Export the textured mesh to save/export/; score it when an evaluator exists (the runner saves the scores)."""
        from framework.export import export_textured_mesh

        export_dir = self.save_dir / "export"
        cfg = self.cfg.export
        with section("isosurface"):
            mesh, albedo_fn = self.export_mesh()
        with section("mesh clean-up"):
            mesh = clean_mesh(mesh, cfg.min_component_fraction, cfg.max_faces, cfg.smooth_iterations)
        with section("uv atlas, texture, files"):
            export_textured_mesh(mesh, albedo_fn, export_dir, texture_size=cfg.texture_size, glb=cfg.glb,
                                 up_axis=cfg.up_axis)
        metrics: dict[str, float] = {}
        if self.evaluator is not None:
            with section("scoring"):
                metrics.update(self.evaluator.evaluate(str(export_dir)))
        # the isosurface's own counts and closedness (the reloaded OBJ splits vertices along UV seams)
        metrics.update(n_vertices=float(mesh.vertices.shape[0]), n_faces=float(mesh.n_faces))
        metrics["watertight"] = float(is_watertight(mesh))
        self.metrics = metrics
        return metrics
