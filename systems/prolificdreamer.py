"""ProlificDreamer (Wang et al., 2023): a NeRF by VSD, then its mesh's geometry, then its texture.

Three runs, each taking over the last by checkpoint as Magic3D's refine takes over its coarse
run (systems/magic3d.py: the earlier run's config is read from its run directory, its geometry
rebuilt and loaded):

1. `prolificdreamer` / `prolificdreamer-toy`: the DreamFusion system (systems/dreamfusion.py)
   with VSD guidance (models/guidance/vsd.py); no class of its own.
2. `prolificdreamer-geometry[-toy]` (`ProlificDreamerGeometry`): a DMTet mesh started from the
   stage-1 density exactly as Magic3D's refine starts (`Magic3DRefine.take_over_geometry`, the
   stage-1 texture networks inherited), rasterized at 512² and shaped by SDS on its rendered
   normals (`guide: normal`, threestudio's geometry stage) with the mesh regularisers. Only the
   surface trains: the inherited texture networks are frozen. `guide: rgb` lets the guidance see
   the shaded render instead, for a prior that never saw normal maps (the toy one).
3. `prolificdreamer-texture[-toy]` (`ProlificDreamerTexture`): the stage-2 DMTet copied as it is
   (`DMTet.initialize_from_dmtet`) and frozen (its SDF and offsets get no gradient and are in no
   optimiser group), its texture trained by VSD.

`system.geometry_convert_from` (the earlier run's ckpts/last.ckpt) is needed only to start a
training run: null at construction is allowed (configs compose and build without it; resume,
weights and export read the run's own checkpoint), and `initialise_for_training` then names
the key and the run to make first. Both later stages export the DMTet mesh with its texture.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import Tensor

from framework.config import ConfigError
from framework.value_checks import check_fields, one_of
from models.geometry.dmtet import DMTet
from systems.dreamfusion import DreamFusionConfig
from systems.magic3d import Magic3DRefine, Magic3DRefineConfig, coarse_run_config, load_geometry

GUIDES = ("normal", "rgb")


def required_checkpoint(source: Optional[str], stage: str, earlier: str, earlier_toy: str) -> Path:
    """The earlier run's checkpoint a fresh training run of `stage` starts from; a ConfigError naming
    the key and the run to make first when it is not given."""
    if source is None:
        raise ConfigError(
            f"system.geometry_convert_from is not set: the ProlificDreamer {stage} stage starts from an "
            f"{earlier} run. Run {earlier} first ({earlier_toy} on the toy world) and give its ckpts/last.ckpt: "
            f"system.geometry_convert_from=outputs/{earlier}/<tag>@<time>/ckpts/last.ckpt"
        )
    return Path(source).expanduser()


@dataclass
class ProlificDreamerGeometryConfig(Magic3DRefineConfig):
    _target_: str = "systems.prolificdreamer.ProlificDreamerGeometry"
    geometry_convert_from: Optional[str] = None
    """The stage-1 run's checkpoint (…/ckpts/last.ckpt); needed to start training (resume, weights and
    export use the run's own checkpoint)."""
    guide: str = "normal"
    """What the guidance sees: 'normal' (the rendered normals, (n + 1) / 2 on black: ProlificDreamer)
    or 'rgb' (the shaded render of the inherited, frozen texture)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, guide=one_of(*GUIDES))


class ProlificDreamerGeometry(Magic3DRefine):
    cfg: ProlificDreamerGeometryConfig
    stage = "prolificdreamer geometry"
    earlier = "prolificdreamer"

    def __init__(self, cfg: ProlificDreamerGeometryConfig, run_dir: Optional[str] = None):
        super().__init__(cfg, run_dir)
        for name in ("encoding", "feature_network"):  # geometry only: the texture stays stage 1's
            network = getattr(self.geometry, name, None)
            if network is not None:
                network.requires_grad_(False)

    def guidance_input(self, out: dict[str, Tensor]) -> Tensor:
        return out["comp_normal"] if self.cfg.guide == "normal" else out["comp_rgb"]

    def initialise_for_training(self) -> None:
        checkpoint = required_checkpoint(self.cfg.geometry_convert_from, "geometry", "prolificdreamer", "prolificdreamer-toy")
        self.take_over_geometry(checkpoint)


@dataclass
class ProlificDreamerTextureConfig(DreamFusionConfig):
    _target_: str = "systems.prolificdreamer.ProlificDreamerTexture"
    geometry_convert_from: Optional[str] = None
    """The geometry stage's checkpoint (…/ckpts/last.ckpt, a DMTet run); needed to start training
    (resume, weights and export use the run's own checkpoint)."""
    geometry_convert_inherit_texture: bool = True
    """Also copy the geometry stage's texture networks (false: the texture starts afresh, as threestudio's)."""


class ProlificDreamerTexture(Magic3DRefine):
    """Magic3D refine's rasterized DMTet (render, export) with the surface held fixed."""

    cfg: ProlificDreamerTextureConfig  # type: ignore[assignment]
    stage = "prolificdreamer texture"
    earlier = "prolificdreamer-geometry"

    def __init__(self, cfg: ProlificDreamerTextureConfig, run_dir: Optional[str] = None):
        super().__init__(cfg, run_dir)
        if not isinstance(self.geometry, DMTet):
            raise ConfigError(
                f"system.geometry: the texture stage textures the geometry stage's DMTet mesh; "
                f"{type(self.geometry).__name__} is none (use system/geometry=tetrahedra-sdf-grid)"
            )
        if not self.geometry.cfg.fix_geometry:
            raise ConfigError("system.geometry.fix_geometry=false: the texture stage holds the geometry stage's surface fixed")
        # DMTet's fix_geometry leaves the SDF and offsets without gradient, so no optimiser group takes them

    def regularisers(self) -> dict[str, Callable[[dict[str, Any]], Tensor]]:
        return {}  # the mesh does not change: nothing to regularise

    def initialise_for_training(self) -> None:
        checkpoint = required_checkpoint(
            self.cfg.geometry_convert_from, "texture", "prolificdreamer-geometry", "prolificdreamer-geometry-toy"
        )
        earlier_cfg, config_path = coarse_run_config(checkpoint, self.earlier)
        target = OmegaConf.select(earlier_cfg, "system.geometry._target_", default=None)
        if not is_dmtet(target):
            raise ConfigError(
                f"system.geometry_convert_from={checkpoint}: the texture stage starts from a geometry-stage (DMTet) "
                f"run, but that run's geometry is {target} ({config_path}). Run prolificdreamer-geometry "
                f"(prolificdreamer-geometry-toy on the toy world) on it first and give that run's ckpts/last.ckpt"
            )
        source = load_geometry(earlier_cfg.system.geometry, checkpoint)
        try:
            self.geometry.initialize_from_dmtet(source, copy_network=self.cfg.geometry_convert_inherit_texture)
        except ValueError as err:
            raise ConfigError(
                f"cannot start the texture stage from {checkpoint}: {err}. system.geometry must match the geometry "
                f"stage's ({config_path}), or set system.geometry_convert_inherit_texture=false for another texture network"
            ) from err
        mesh = self.geometry.isosurface()
        print(f"{self.stage}: DMTet taken over from {checkpoint} ({mesh.vertices.shape[0]} vertices, {mesh.n_faces} faces)")


def is_dmtet(target: Any) -> bool:
    """Whether a config's `_target_` names DMTet (or a subclass)."""
    try:
        cls = get_class(str(target))
    except Exception:  # noqa: BLE001 - an unknown or missing target is simply not a DMTet
        return False
    return isinstance(cls, type) and issubclass(cls, DMTet)
