"""The live viewer: a viser page (nerfstudio's viewer library) that shows a run while it trains.

`viewer.enabled=true` (framework/run_config.py `ViewerConfig`) adds `LiveViewer` to the trainer
(framework/runner.py). The page at http://<viewer.host>:<viewer.port> shows

- the shape: a coarse isosurface (`system.preview_mesh(viewer.mesh_resolution)`, coloured by the
  albedo) computed every `viewer.mesh_every` steps on the training thread;
- the cameras of the current batch as frustums, each with its render;
- the latest render and the loss curve (a uPlot chart), every `viewer.refresh_every` steps;
- buttons: pause / resume, save a checkpoint now (`ckpts/viewer-step<step>.ckpt`, beside
  ModelCheckpoint's `step*.ckpt` and `last.ckpt`), export now (`system.export()` to save/export/).

Threads: viser runs its own; its button callbacks only set flags and queue requests, which the
training thread carries out at the next step boundary (`on_train_batch_end`). Sending to the page
only queues messages, so training never waits on a browser; it waits only while the user has
pressed pause (and a signal, Ctrl-C or SIGTERM, ends the pause so the run stops as usual). The
server is stopped at the end of the run (the runner calls `close`, on failure too).
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch

from framework.errors import ConfigError
from framework.random_state import global_states, set_global_states
from framework.run_config import ViewerConfig
from framework.viser_server import start_server, stop_server, url_of

MESH_NODE = "/shape"
CAMERAS_NODE = "/cameras"
REQUESTS = ("checkpoint", "export")


def opencv_rotation(c2w: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of an OpenGL camera-to-world (looks down -z, +y up) as viser's OpenCV camera
    (looks down +z, +y down): the same camera with its y and z axes flipped."""
    return c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, H, W, 3) float in [0, 1] -> (H, B*W, 3) uint8, the batch side by side."""
    rgb = images.detach().float().clamp(0, 1).cpu().numpy()
    return (np.concatenate(list(rgb), axis=1) * 255 + 0.5).astype(np.uint8)


class LiveViewer(pl.Callback):
    """Serves the page from construction (so a taken port stops the run before training) until `close`."""

    def __init__(self, cfg: ViewerConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.server = start_server(cfg.host, cfg.port, "viewer.port", error=ConfigError)
        self.url = url_of(self.server)
        print(f"live viewer: {self.url} (pause, save a checkpoint or export from the page)", flush=True)
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._paused = threading.Event()
        self._closed = False
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.radius = 1.0  # the geometry's, read when training starts
        self.waiting_at: Optional[int] = None  # the step after which training is held by pause (else None)
        self.mesh_updates = 0  # how many isosurfaces were sent (tests read these)
        self.checkpoints: list[Path] = []
        self.exports: list[dict[str, float]] = []
        self._n_frustums = 0
        self._build_page()

    # ---- what the page's buttons call (viser's thread; tests call them too) -----------------
    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self) -> None:
        if not self._closed:
            self._paused.set()
            self._pause_button.label, self._pause_button.icon = "Resume", "player-play"

    def resume(self) -> None:
        self._paused.clear()
        if not self._closed:
            self._pause_button.label, self._pause_button.icon = "Pause", "player-pause"
            self._status.content = f"**{self.run_dir.name}**  \nresumed"

    def request(self, what: str) -> None:
        """Queue 'checkpoint' or 'export' for the training thread's next step boundary."""
        if what not in REQUESTS:
            raise ValueError(f"unknown request {what!r}: one of {REQUESTS}")
        self._requests.put(what)

    def _build_page(self) -> None:
        gui, server = self.server.gui, self.server
        server.initial_camera.position = (2.6, 2.6, 1.8)
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        server.initial_camera.up = (0.0, 0.0, 1.0)
        self._status = gui.add_markdown(f"**{self.run_dir.name}**  \nwaiting for the first step")
        self._pause_button = gui.add_button("Pause", icon="player-pause", hint="hold training after this step")
        self._pause_button.on_click(lambda _: self.resume() if self.paused else self.pause())
        save = gui.add_button("Save checkpoint now", icon="device-floppy", hint=f"{self.run_dir / 'ckpts'}/viewer-step<step>.ckpt")
        save.on_click(lambda _: self.request("checkpoint"))
        export = gui.add_button("Export now", icon="package-export", hint=f"the mesh to {self.run_dir / 'save/export'}")
        export.on_click(lambda _: self.request("export"))
        self._render = gui.add_image(np.full((64, 64, 3), 255, np.uint8), label="latest render")
        self._curve = gui.add_uplot(
            (np.zeros(1), np.zeros(1)),
            ({"label": "step"}, {"label": "train/loss", "stroke": "#d9480f", "width": 2}),
            title="loss", aspect=1.6,
            scales={"x": {"time": False}},
        )

    # ---- the training thread ----------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.radius = float(getattr(getattr(pl_module, "geometry", None), "radius", 1.0))
        r = self.radius
        self.server.initial_camera.position = (2.3 * r, 2.3 * r, 1.6 * r)
        self.server.scene.add_grid("/ground", width=5 * r, height=5 * r, cell_size=r / 4, position=(0.0, 0.0, -r))
        self._send_mesh(pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.steps.append(step)
            self.losses.append(float(loss))
        if step % self.cfg.refresh_every == 0 or step == 1:
            self._send_batch(pl_module, batch, step)
        if step % self.cfg.mesh_every == 0:
            self._send_mesh(pl_module, step)
        self._carry_out_requests(trainer, pl_module)
        if self.paused:
            self._status.content = f"**{self.run_dir.name}**  \npaused after step {step}: press Resume"
        while self.paused and not self._stopping(trainer):
            self.waiting_at = step
            self._carry_out_requests(trainer, pl_module)
            time.sleep(0.05)
        self.waiting_at = None
        self._carry_out_requests(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._send_mesh(pl_module, trainer.global_step)
        self._status.content = f"**{self.run_dir.name}**  \ntraining done at step {trainer.global_step}"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    def _stopping(self, trainer: pl.Trainer) -> bool:
        return self._closed or bool(getattr(trainer._signal_connector, "received_sigterm", False)) or trainer.should_stop

    def _send_batch(self, pl_module: pl.LightningModule, batch: dict[str, Any], step: int) -> None:
        render = getattr(pl_module, "latest_render", None)
        rgb = render if render is not None and render.shape[-1] == 3 else None
        if rgb is not None:
            self._render.image = to_uint8(rgb)
        if isinstance(batch, dict) and "c2w" in batch:
            self._send_cameras(batch, rgb)
        if self.steps:
            self._curve.data = self._curve_data()
        loss = f"{self.losses[-1]:.4g}" if self.losses else "-"
        state = "paused" if self.paused else "training"
        self._status.content = f"**{self.run_dir.name}**  \n{state}: step {step}, loss {loss}"

    def _send_cameras(self, batch: dict[str, Any], rgb: Optional[torch.Tensor]) -> None:
        c2w = batch["c2w"].detach().float().cpu().numpy()
        fovy = batch["fovy"].detach().float().cpu().numpy()
        aspect = float(batch.get("width", 1)) / float(batch.get("height", 1))
        import viser.transforms as vtf

        for i in range(c2w.shape[0]):
            image = to_uint8(rgb[i : i + 1]) if rgb is not None and i < rgb.shape[0] else None
            self.server.scene.add_camera_frustum(
                f"{CAMERAS_NODE}/{i}", fov=float(fovy[i]), aspect=aspect, scale=0.3 * self.radius, color=(40, 90, 200),
                image=image, wxyz=vtf.SO3.from_matrix(opencv_rotation(c2w[i])).wxyz, position=c2w[i, :3, 3],
            )
        for i in range(c2w.shape[0], self._n_frustums):  # a smaller batch than before (scheduled batch size)
            self.server.scene.remove_by_name(f"{CAMERAS_NODE}/{i}")
        self._n_frustums = c2w.shape[0]

    def _curve_data(self) -> tuple[np.ndarray, np.ndarray]:
        steps, losses = np.asarray(self.steps, np.float64), np.asarray(self.losses, np.float64)
        if len(steps) > self.cfg.curve_points:
            keep = np.linspace(0, len(steps) - 1, self.cfg.curve_points).round().astype(int)
            steps, losses = steps[keep], losses[keep]
        return steps, losses

    def _send_mesh(self, pl_module: pl.LightningModule, step: int) -> None:
        import trimesh

        preview = getattr(pl_module, "preview_mesh", None)
        if preview is None or self._closed:
            return
        try:
            mesh, colours = preview(self.cfg.mesh_resolution)
        except ValueError as empty:  # no surface at the threshold yet (framework/isosurface.py EmptySurfaceError)
            self._status.content = f"**{self.run_dir.name}**  \nstep {step}: no surface yet ({str(empty).splitlines()[0]})"
            return
        vertices = mesh.vertices.detach().float().cpu().numpy()
        faces = mesh.faces.detach().cpu().numpy()
        if len(faces) == 0:
            return
        vertex_colors = None if colours is None else (colours.detach().float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
        shape = trimesh.Trimesh(vertices, faces, vertex_colors=vertex_colors, process=False)
        self.server.scene.add_mesh_trimesh(MESH_NODE, shape)
        self.mesh_updates += 1

    def _carry_out_requests(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while True:
            try:
                what = self._requests.get_nowait()
            except queue.Empty:
                return
            if trainer.world_size > 1:  # rank 0 alone serves the page; saving and exporting involve every rank
                self._notify(f"'{what} now' is not available in a run of {trainer.world_size} processes")
            elif what == "checkpoint":
                path = self.run_dir / "ckpts" / f"viewer-step{trainer.global_step:06d}.ckpt"
                trainer.save_checkpoint(path, weights_only=False)  # a full one: resume= continues from it
                self.checkpoints.append(path)
                self._notify(f"saved {path}")
            elif what == "export":
                states = global_states()  # the export must not move the training's random streams
                try:
                    metrics = pl_module.export()
                finally:
                    set_global_states(states)
                self.exports.append(metrics)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in ("iou", "chamfer", "colour_error"))
                self._notify(f"exported to {self.run_dir / 'save/export'} at step {trainer.global_step}" + (f" ({shown})" if shown else ""))

    def _notify(self, message: str) -> None:
        print(f"viewer: {message}", flush=True)
        for client in self.server.get_clients().values():  # notifications are per page
            client.add_notification("toy3d", message, auto_close_seconds=6.0)

    def close(self) -> None:
        """Stop the server (idempotent); a paused run is let go."""
        if self._closed:
            return
        self._closed = True
        self._paused.clear()
        stop_server(self.server)


def close_viewers(trainer: Optional[pl.Trainer]) -> None:
    """Stop every LiveViewer of the trainer (the runner calls this when the run ends, however it ends)."""
    for callback in getattr(trainer, "callbacks", []) if trainer is not None else []:
        if isinstance(callback, LiveViewer):
            callback.close()
