"""The top-level config of a run: what `python launch.py --config-name <method>` composes.

A method YAML (configs/<method>.yaml) extends this schema, so a misspelt top-level key or a
value of the wrong type is reported by Hydra while composing, with its full dotted name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from framework.value_checks import at_least, between, check_fields, either, one_of, optional

MODES = ("train", "validate", "test", "export")


@dataclass
class TrainerConfig:
    """Arguments of pytorch_lightning.Trainer that runs use (see its documentation)."""

    max_steps: int = 10000
    val_check_interval: int = 200
    """Validate (save turntable stills) every this many steps."""
    log_every_n_steps: int = 1
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    precision: Any = "32-true"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    """'ddp' on several GPUs: each rank draws its own cameras."""
    max_nonfinite_steps: int = 20
    """Stop the run after this many steps in a row whose loss or gradient was NaN/Inf (each such step is
    skipped: the parameters stay as they were)."""
    step_times: bool = False
    """Time the parts of each step (render: sampling, field, material, compositing; guidance; backward;
    optimiser) and the validation, test video and export; printed at the end, written to
    <run>/step_times.json (framework/step_times.py)."""
    profiler: Optional[str] = None
    """Lightning's profiler: simple | advanced | pytorch, its report written to <run>/profiler*.txt."""
    keep_freed_memory: bool = True
    """Let the C library's malloc keep freed blocks for the next step instead of returning them to the
    system (glibc only; a no-op elsewhere): fewer page faults and less system time (the toy demo: 9 s
    instead of 20), the same numbers. The process keeps its peak memory (framework/allocator.py)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            max_steps=at_least(1),
            val_check_interval=at_least(1),
            log_every_n_steps=at_least(1),
            num_sanity_val_steps=at_least(0),
            num_nodes=at_least(1),
            devices=either(at_least(1), one_of("auto", -1)),
            accelerator=one_of("auto", "cpu", "gpu", "cuda", "mps"),
            max_nonfinite_steps=at_least(1),
            profiler=optional(one_of("simple", "advanced", "pytorch")),
        )


@dataclass
class CheckpointConfig:
    every_n_train_steps: int = 1000
    save_last: bool = True
    save_top_k: int = -1
    """Keep every periodic checkpoint (-1) or only the last k."""

    def __post_init__(self) -> None:
        check_fields(self, every_n_train_steps=at_least(1), save_top_k=at_least(-1))


@dataclass
class LoggerConfig:
    csv: bool = True
    tensorboard: bool = True
    wandb: bool = False
    """Weights & Biases (pip install '.[wandb]'); project and name below."""
    wandb_project: str = "toy3d"


@dataclass
class ViewerConfig:
    """The live viewer (framework/live_viewer.py): a viser page showing the run while it trains."""

    enabled: bool = False
    """Serve the page during training (rank 0 only). Off: nothing is started or imported."""
    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for any (then reach it through an
    SSH tunnel or the machine's name)."""
    port: int = 8080
    """Port of the page (http://<host>:<port>); 0 takes a free one, printed at the start. A port in use
    stops the run before training."""
    refresh_every: int = 5
    """Send the latest render, the batch's cameras and the loss curve every this many steps."""
    mesh_every: int = 25
    """Compute the isosurface (on the training thread) and send it every this many steps."""
    mesh_resolution: int = 48
    """Samples per axis of the live isosurface's grid (the export keeps the geometry's own resolution)."""
    curve_points: int = 2000
    """The loss curve shows at most this many points (older steps are thinned out)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            port=between(0, 65535),
            refresh_every=at_least(1),
            mesh_every=at_least(1),
            mesh_resolution=at_least(8),
            curve_points=at_least(2),
        )


@dataclass
class RunConfig:
    name: str = "default"
    """Method name: the first level of outputs/<name>/<tag>@<timestamp>/."""
    tag: str = ""
    """Run label; defaults to the prompt made filename-safe."""
    seed: int = 0
    mode: str = "train"
    """train (then test and export) | validate | test | export."""
    resume: Optional[str] = None
    """A checkpoint: train continues from it (optimizer, step); validate/test/export evaluate it."""
    weights: Optional[str] = None
    """A checkpoint whose model weights initialise a new run (no optimizer state, step 0)."""
    partial_weights: bool = False
    """Let `weights=` fill only part of the model (e.g. another method's geometry); the loaded fraction is
    printed. Off: every parameter must be found in the checkpoint with its shape."""
    data: Any = MISSING
    system: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)

    def __post_init__(self) -> None:
        check_fields(self, mode=one_of(*MODES))
