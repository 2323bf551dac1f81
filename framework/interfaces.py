"""The interfaces `models/` fills and `systems/` composes.

`framework/` never imports `models/` or `systems/`; it states here what they provide. The
components are small base classes (an `nn.Module` with `update_step`) documenting the shapes that
cross them; what the runner asks of a whole system is a protocol (`RunnableSystem`, at the end).

The camera batch (what the data module yields and every component may read) is a dict:

    c2w              (B, 4, 4)  OpenGL camera-to-world (framework.cameras)
    fovy             (B,)       vertical field of view, radians
    elevation        (B,)       degrees
    azimuth          (B,)       degrees, in [-180, 180)
    distance         (B,)       camera distance to the origin
    camera_position  (B, 3)
    light_position   (B, 3)
    rays_o, rays_d   (B, H, W, 3) world-space rays, unit directions
    height, width    int

Images crossing module boundaries are float32 (B, H, W, C) in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

from torch import Tensor, nn


class Component(nn.Module):
    """Anything a system owns. The system calls `update_step` explicitly every training step."""

    def update_step(self, global_step: int) -> None:  # noqa: B027 - optional hook
        """React to the training step (schedules, progressive levels). Default: nothing."""


@dataclass
class Mesh:
    """A triangle mesh in world coordinates (+z up)."""

    vertices: Tensor  # (V, 3) float
    faces: Tensor  # (F, 3) long

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])


class Geometry(Component):
    """An implicit field over points in the bounding box [-radius, radius]^3."""

    radius: float

    def forward(self, points: Tensor, output_normal: bool = False) -> dict[str, Tensor]:
        """points (N, 3) -> {"density": (N, 1), "features": (N, F), "normal": (N, 3) if asked}"""
        raise NotImplementedError

    def forward_density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> density (N, 1), without features or normals (cheap path)."""
        raise NotImplementedError

    def density_and_encoding(self, points: Tensor) -> tuple[Tensor, Tensor | None]:
        """forward_density without gradients, plus an (N, E) input encoding that `forward(points,
        encoding=...)` reuses instead of recomputing, or None (the default: nothing to reuse, and
        forward is then never given one)."""
        return self.forward_density(points), None

    def isosurface(self) -> Mesh:
        """The surface of the field as a mesh (for export and scoring)."""
        raise NotImplementedError

    def preview_mesh(self, resolution: int) -> Mesh:
        """A quick, coarse surface for the live viewer (framework/live_viewer.py), meshed from about
        `resolution` samples per axis. Default: `isosurface()` (a geometry whose surface is already cheap)."""
        return self.isosurface()

    def export_features(self, points: Tensor) -> Tensor:
        """points (N, 3) -> the features (N, F) a material turns into albedo for baking."""
        return self.forward(points)["features"]


class Material(Component):
    """Turns geometry features into colour."""

    requires_normal: bool = False

    def forward(
        self,
        features: Tensor,  # (N, F)
        viewdirs: Tensor,  # (N, 3) unit, from camera towards the point
        positions: Tensor,  # (N, 3)
        light_positions: Tensor,  # (N, 3)
        shading_normal: Tensor | None = None,  # (N, 3) unit
        shading: str | None = None,  # force 'albedo' | 'textureless' | 'diffuse' (a reference view); None: its own choice
    ) -> Tensor:  # (N, 3) in [0, 1]
        raise NotImplementedError

    def albedo(self, features: Tensor) -> Tensor:
        """features (N, F) -> albedo (N, 3) in [0, 1]: what export bakes into the texture."""
        raise NotImplementedError


class Background(Component):
    def forward(self, dirs: Tensor) -> Tensor:
        """dirs (B, H, W, 3) unit view directions -> colour (B, H, W, 3) in [0, 1]"""
        raise NotImplementedError


class Renderer(Component):
    """Renders geometry + material + background for a camera batch.

    Returns at least: comp_rgb (B, H, W, 3), comp_rgb_fg (B, H, W, 3), comp_rgb_bg (B, H, W, 3),
    opacity (B, H, W, 1), depth (B, H, W, 1), comp_normal (B, H, W, 3) in [0, 1]; and in
    training, per-sample `weights` (S, 1), `normal` (S, 3), `t_dirs` (S, 3) for the
    orientation loss (S = samples actually evaluated).
    """

    def forward(
        self,
        rays_o: Tensor,  # (B, H, W, 3)
        rays_d: Tensor,  # (B, H, W, 3)
        light_positions: Tensor,  # (B, 3)
        bg_color: Tensor | None = None,  # (B, H, W, 3) or (3,), overrides the background
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def background_image(self, rays_d: Tensor, bg_color: Tensor | None) -> Tensor:
        """What shows where the scene is empty, (B, H, W, C): the renderer's `background` component
        along the view directions rays_d (B, H, W, 3), or `bg_color` ((C,), (B, C) or (B, H, W, C)) when given.
        C is 3 for RGB, 4 for latent renders (SJC)."""
        B, H, W, _ = rays_d.shape
        if bg_color is None:
            return self.background(rays_d)
        bg = bg_color.to(rays_d)
        bg = bg.reshape(B, 1, 1, -1) if bg.dim() == 2 else bg
        return bg.expand(B, H, W, bg.shape[-1])


class PromptProcessor(Component):
    """Turns the prompt into whatever the guidance conditions on (text embeddings, a toy scene)."""

    def forward(self) -> Any:
        raise NotImplementedError


class Guidance(Component):
    """A frozen prior plus a distillation rule; returns named losses `loss_<name>`.

    `loss_names` lists the names it can return, so the system can check its `lambda_<name>`
    weights before training starts.
    """

    loss_names: tuple[str, ...] = ()

    def forward(self, rgb: Tensor, condition: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
        """rgb (B, H, W, 3) in [0, 1] with gradients -> {"loss_<name>": scalar, ...}"""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The guidance's own trainable parameters (VSD's LoRA copy and camera embedding); everything
        else in it is frozen. The system trains these beside the 3D model and keeps them in its
        checkpoints. Default: none."""
        return iter(())


class Evaluator:
    """Scores an exported mesh against a known truth (the toy world). Optional per system."""

    def evaluate(self, export_dir: str) -> dict[str, float]:
        raise NotImplementedError


@runtime_checkable
class RunnableSystem(Protocol):
    """What framework/runner.py asks of a system beyond being a `pytorch_lightning.LightningModule`.

    Two families fill it: the methods (framework/base_system.py's `BaseSystem`, subclassed in
    systems/) and the toy-prior trainers (models/priors/toy/training/). The runner:

    - builds it as `Target(cfg, run_dir=<run directory>)` (framework.config.instantiate): the
      class's constructor takes its typed config and a `run_dir: str | None` keyword, the folder
      its outputs go under (`<run_dir>/save/`);
    - on a fresh training run only (not with `resume=` or `weights=`), calls
      `initialise_for_training()` before `trainer.fit`;
    - after training, and in `mode=export` (after loading `resume=`'s weights, with no Trainer
      attached), calls `export()` and writes the figures it returns to metrics.json;
    - with `weights=` and in `mode=export`, loads a checkpoint itself: `on_load_checkpoint(ckpt)` on
      the dict torch.load returns, then `load_state_dict(ckpt["state_dict"])`. Every LightningModule
      has both; a system whose checkpoint differs from its state dict mends it in that hook (DreamFusion
      and Magic3D put back the frozen prior they leave out, the prior trainers restore their EMA), which
      therefore must not need a Trainer.

    Everything else goes through Lightning (`trainer.fit / validate / test`, the module's hooks).

    A Protocol rather than a base class: the two families share nothing else (their steps,
    optimizers and exports differ), so a common base would hold only these two signatures, would
    put a second class into both hierarchies, and would hide a missing method behind its default.
    As a protocol it is checked where it matters, by tests/framework/test_interfaces.py against
    every system class the schemas name, and neither family depends on the other.
    """

    def initialise_for_training(self) -> None:
        """Set up a fresh training run (e.g. Magic3D refine takes over the coarse stage's geometry);
        may do nothing. Not called on resume or when weights are loaded."""
        ...

    def export(self) -> dict[str, float]:
        """Write the run's result under `<run_dir>/save/` (a textured mesh, or a diffusers folder for
        a trained prior) and return its figures {name: value} (scores, sample-check figures)."""
        ...
