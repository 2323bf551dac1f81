"""DreamFusion (Poole et al., 2022): a NeRF optimised by score distillation of a 2D prior.

One step: draw cameras, volume-render the scene, let the guidance turn the render into
`loss_sds` (models/guidance/sds.py), add DreamFusion's regularisers (orientation, sparsity,
opacity entropy), each weighted by its scheduled `lambda_<name>`. The same system runs with the
toy exact-score prior, DeepFloyd IF or Stable Diffusion: only `system/guidance` changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from omegaconf import MISSING
from torch import Tensor

from framework.base_system import BaseSystem, BaseSystemConfig
from framework.config import instantiate
from framework.interfaces import Component, Evaluator, Mesh
from framework.regularisers import REGULARISERS
from framework.step_times import section
from models.geometry.surface_colour import textured_isosurface
from systems.frozen_guidance import FrozenGuidanceCheckpoints

@dataclass
class DreamFusionConfig(BaseSystemConfig):
    _target_: str = "systems.dreamfusion.DreamFusion"
    prompt: str = MISSING
    """What to make: a text prompt (a toy-world prompt with the toy priors)."""
    geometry: Any = MISSING
    material: Any = MISSING
    background: Any = MISSING
    renderer: Any = MISSING
    prompt_processor: Any = MISSING
    guidance: Any = MISSING


class DreamFusion(FrozenGuidanceCheckpoints, BaseSystem):
    def __init__(self, cfg: DreamFusionConfig, run_dir: Optional[str] = None):
        super().__init__(cfg, run_dir)
        self.geometry = instantiate(cfg.geometry)
        self.material = instantiate(cfg.material)
        self.background = instantiate(cfg.background)
        self.renderer = instantiate(
            cfg.renderer, geometry=self.geometry, material=self.material, background=self.background
        )
        self.prompt_processor = instantiate(cfg.prompt_processor)
        self.guidance = instantiate(cfg.guidance)
        self.guidance.requires_grad_(False)
        for param in self.guidance.trainable_parameters():  # VSD's LoRA copy trains with the 3D model
            param.requires_grad_(True)
        self._evaluator = instantiate(cfg.evaluator) if cfg.evaluator is not None else None
        self.setup_losses()

    # ---- parts -------------------------------------------------------------------------------
    def owned_components(self) -> list[Component]:
        return [self.geometry, self.material, self.background, self.renderer, self.prompt_processor, self.guidance]

    def producible_losses(self) -> list[str]:
        return list(self.guidance.loss_names) + list(self.regularisers())

    def regularisers(self) -> dict[str, Callable[[dict[str, Any]], Tensor]]:
        """Name -> regulariser on the render output (loss_<name>, weighted by lambda_<name>).
        DreamFusion's volume regularisers; other methods swap or configure them."""
        return REGULARISERS

    @property
    def evaluator(self) -> Optional[Evaluator]:
        return self._evaluator

    # ---- a step ------------------------------------------------------------------------------
    def render(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.renderer(batch["rays_o"], batch["rays_d"], batch["light_position"])

    def guidance_input(self, out: dict[str, Tensor]) -> Tensor:
        """The image (B, H, W, 3) the guidance sees: the render (ProlificDreamer's geometry stage: its normals)."""
        return out["comp_rgb"]

    def guidance_losses(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """The guidance's loss_<name> terms on the render; its diagnostics are logged."""
        with section("guidance"):
            guidance_out = self.guidance(self.guidance_input(out), self.prompt_processor(), batch)
        return self.logged_guidance_losses(guidance_out)

    def compute_losses(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = self.guidance_losses(batch, out)
        for name, regulariser in self.regularisers().items():
            if self.loss_weights.active(name):
                losses[f"loss_{name}"] = regulariser(out)
        return losses

    # ---- export ------------------------------------------------------------------------------
    def export_mesh(self) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
        return textured_isosurface(self.geometry, self.material)
