"""Magic3D's refine stage (Lin et al., 2023): a DMTet mesh refined through a differentiable rasterizer.

Magic3D's coarse stage is DreamFusion with a plain hash grid and its own defaults, so the
`magic3d-coarse-*` configs use systems/dreamfusion.py as they are. The refine stage here:

- takes over the coarse run: `geometry_convert_from` names the coarse checkpoint; its config is
  read from the same run directory (`<run>/configs/parsed.yaml`, written by every run), the
  coarse geometry is rebuilt from it and loaded, and the DMTet's SDF is set from its density
  (models/geometry/dmtet.py `initialize_from_geometry`), optionally inheriting its texture
  networks. This happens only when a fresh training run starts; resume / weights / export use
  the refine run's own checkpoint;
- renders the extracted mesh with models/renderers/mesh_renderer.py at high resolution
  (512² in Magic3D), so SDS sharpens surface detail the 64² NeRF could not;
- regularises the mesh (normal consistency, Laplacian smoothness: framework/mesh_regularisers.py);
- exports the DMTet mesh with its texture (albedo of the feature network at surface points).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import MISSING, OmegaConf
from torch import Tensor

from framework.config import ConfigError, instantiate, typed_config
from framework.interfaces import Geometry, Mesh
from framework.mesh_regularisers import MESH_REGULARISERS
from framework.value_checks import check_fields, either, greater_than, one_of
from systems.dreamfusion import DreamFusion, DreamFusionConfig


@dataclass
class Magic3DRefineConfig(DreamFusionConfig):
    _target_: str = "systems.magic3d.Magic3DRefine"
    geometry_convert_from: Optional[str] = MISSING
    """Required: the coarse run's checkpoint (…/ckpts/last.ckpt); null starts from the DMTet's own init (a sphere)."""
    geometry_convert_threshold: Any = "coarse"
    """Density level whose surface the DMTet starts from: 'coarse' (the coarse run's own
    isosurface_threshold, so the refine starts from the mesh the coarse stage exported), 'auto', or a number."""
    geometry_convert_inherit_texture: bool = True
    """Copy the coarse hash-grid encoding and feature network (needs the same pos_encoding and radius)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, geometry_convert_threshold=either(one_of("coarse", "auto"), greater_than(0)))


def coarse_run_config(checkpoint: Path, earlier: str = "magic3d-coarse-toy") -> tuple[Any, Path]:
    """The composed config of the run that wrote `checkpoint` (<run>/ckpts/x.ckpt -> <run>/configs/parsed.yaml).
    `earlier` names the config of that run, for the messages."""
    if not checkpoint.is_file():
        raise ConfigError(
            f"system.geometry_convert_from={checkpoint}: no such checkpoint. Give the {earlier} run's "
            f"ckpts/last.ckpt, e.g. outputs/{earlier}/<tag>@<time>/ckpts/last.ckpt"
        )
    config_path = checkpoint.resolve().parent.parent / "configs" / "parsed.yaml"
    if not config_path.is_file():
        raise ConfigError(
            f"system.geometry_convert_from={checkpoint}: the {earlier} run's config was expected next to it at "
            f"{config_path} (every run writes configs/parsed.yaml); was the checkpoint moved out of its run directory?"
        )
    return OmegaConf.load(config_path), config_path


def load_geometry(node: Any, checkpoint: Path) -> Geometry:
    """Rebuild a geometry from its (resolved, untyped) config node and load its weights from a system checkpoint."""
    geometry = instantiate(typed_config(node))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "geometry."
    geometry.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return geometry.eval()


class Magic3DRefine(DreamFusion):
    cfg: Magic3DRefineConfig
    stage = "magic3d refine"
    """This stage's name, and the config of the run it takes over (for messages)."""
    earlier = "magic3d-coarse-toy"

    def regularisers(self) -> dict[str, Callable[[dict[str, Any]], Tensor]]:
        # the mesh regularisers act on the rasterized mesh, not on volume samples
        return {name: (lambda out, fn=fn: fn(out["mesh"])) for name, fn in MESH_REGULARISERS.items()}

    def render(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.renderer.forward_batch(batch)

    def initialise_for_training(self) -> None:
        source = self.cfg.geometry_convert_from
        if source is None:
            print("magic3d refine: no coarse checkpoint given (system.geometry_convert_from); starting from the DMTet's own init")
            return
        self.take_over_geometry(Path(source).expanduser())

    def take_over_geometry(self, checkpoint: Path) -> None:
        """The DMTet's SDF from the density of the geometry in `checkpoint` (an earlier run's), at
        `geometry_convert_threshold`, with its texture networks if `geometry_convert_inherit_texture`."""
        coarse_cfg, config_path = coarse_run_config(checkpoint, self.earlier)
        coarse = load_geometry(coarse_cfg.system.geometry, checkpoint)
        threshold = self.cfg.geometry_convert_threshold
        if threshold == "coarse":
            threshold = OmegaConf.select(coarse_cfg, "system.geometry.isosurface_threshold", default="auto")
        try:
            used = self.geometry.initialize_from_geometry(
                coarse, threshold=threshold, copy_network=self.cfg.geometry_convert_inherit_texture
            )
        except ValueError as err:
            raise ConfigError(
                f"cannot start the {self.stage} stage from {checkpoint}: {err}. Its system.geometry.radius and "
                f"pos_encoding must match the earlier run's ({config_path}), or set "
                f"system.geometry_convert_inherit_texture=false"
            ) from err
        mesh = self.geometry.isosurface()
        print(f"{self.stage}: DMTet initialised from {checkpoint} at density {used:.4g} "
              f"({mesh.vertices.shape[0]} vertices, {mesh.n_faces} faces)")

    def export_mesh(self) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
        mesh = self.geometry.isosurface()
        mesh = Mesh(vertices=mesh.vertices.detach(), faces=mesh.faces)

        def albedo(points: Tensor) -> Tensor:
            # A mesh surface has no haze to see through: the feature network's albedo at the point is its colour.
            return self.material.albedo(self.geometry.export_features(points))

        return mesh, albedo
