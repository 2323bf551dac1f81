"""The live viewer (framework/live_viewer.py) during short real toy runs: what the server holds, pause and
resume, save-now and export-now carried out on the training thread, a taken port refused; and the page
itself in headless Chromium (tests/browser_support.py): the shape on screen, then Resume pressed there."""
from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from framework import runner
from framework.errors import ConfigError
from framework.live_viewer import CAMERAS_NODE, MESH_NODE, LiveViewer
from framework.run_config import ViewerConfig
from tests.browser_support import browser_page, image_spread, pixel_difference
from tests.conftest import REPO, TINY_TOY_RUN

WAIT_S = 180.0  # bound on every wait for the other thread (never reached when things work)


def compose_run(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import launch as _  # noqa: F401  (registers the schemas and resolvers)

    # the torch hash grid: no C++ kernel build needed for these few steps
    overrides = ["logger.csv=false", "system.geometry.pos_encoding.backend=torch", *overrides]
    keys = {o.split("=", 1)[0] for o in overrides}
    tiny = [o for o in TINY_TOY_RUN if o.split("=", 1)[0] not in keys]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="dreamfusion-toy", overrides=[*tiny, *overrides])


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """An in-process run installs the preemption handlers (framework/preemption.py); pytest's are put back."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in kept.items():
        signal.signal(s, handler)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Recorder:
    """Swaps the runner's LiveViewer for one that starts paused and is kept here, so a second thread can
    look at it (and resume it) while the run holds after its first step in the main thread (Lightning's
    signal handlers need the main thread)."""

    def __init__(self, monkeypatch):
        self.viewers: list[LiveViewer] = []
        recorder = self

        class PausedAtStart(LiveViewer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.pause()
                recorder.viewers.append(self)

        monkeypatch.setattr(runner, "LiveViewer", PausedAtStart)

    def run_with(self, cfg, run_dir: Path, look: Callable[[LiveViewer], None]) -> dict:
        failures: list[BaseException] = []

        def looker() -> None:
            try:
                wait_for(lambda: self.viewers and self.viewers[0].waiting_at is not None, "the run to pause")
                look(self.viewers[0])
            except BaseException as error:  # told in the main thread
                failures.append(error)
            finally:
                if self.viewers:
                    self.viewers[0].resume()

        thread = threading.Thread(target=looker, daemon=True)
        thread.start()
        try:
            metrics = runner.run(cfg, run_dir)
        finally:
            if self.viewers:
                self.viewers[0].resume()
            thread.join(WAIT_S)
        if failures:
            raise failures[0]
        return metrics


def scene_names(viewer: LiveViewer) -> set[str]:
    return set(viewer.server.scene._handle_from_node_name)  # viser's own record of the scene's nodes


def test_live_viewer_shows_the_run_holds_on_pause_and_carries_out_requests(tmp_path, toy_cache, monkeypatch):
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))
    cfg = compose_run(["trainer.max_steps=2", "trainer.val_check_interval=2", "viewer.enabled=true", "viewer.port=0",
                       "viewer.refresh_every=1", "viewer.mesh_every=2", "viewer.mesh_resolution=24"])
    recorder = Recorder(monkeypatch)
    seen: dict = {}

    def look(viewer: LiveViewer) -> None:
        seen["step"] = viewer.waiting_at
        seen["names"] = scene_names(viewer)
        seen["image"] = np.array(viewer._render.image)
        seen["mesh_updates"] = viewer.mesh_updates
        viewer.request("checkpoint")
        wait_for(lambda: viewer.checkpoints, "the checkpoint asked for while paused")
        viewer.request("export")
        wait_for(lambda: viewer.exports, "the export asked for while paused")
        seen["still_at"] = viewer.waiting_at  # both carried out without letting training go on

    metrics = recorder.run_with(cfg, tmp_path, look)
    viewer = recorder.viewers[0]
    assert seen["step"] == 1 and seen["still_at"] == 1
    assert MESH_NODE in seen["names"] and f"{CAMERAS_NODE}/0" in seen["names"], seen["names"]
    assert seen["mesh_updates"] == 1  # the starting blob's surface, before step 1
    image = seen["image"]
    assert image.ndim == 3 and image.shape[-1] == 3 and image.std() > 1  # the step's render, not the blank start
    # the mesh is recomputed as training goes: at step 2 (mesh_every) and when training ends
    assert viewer.mesh_updates == 3
    assert viewer.steps == [1, 2] and len(viewer.losses) == 2 and all(np.isfinite(viewer.losses))
    assert viewer._curve.data[0].tolist() == [1, 2]
    assert viewer.checkpoints == [tmp_path / "ckpts" / "viewer-step000001.ckpt"] and viewer.checkpoints[0].is_file()
    assert {"iou", "chamfer"} <= set(viewer.exports[0])
    assert (tmp_path / "ckpts" / "last.ckpt").is_file() and "iou" in metrics  # the run went on to the end
    assert viewer._closed  # the server is stopped when the run ends
    viewer.server._websock_server._server_thread.join(10)
    assert not viewer.server._websock_server._server_thread.is_alive()


def test_a_taken_port_is_refused_before_training(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"viewer\.port={port} is in use.*viewer\.port=0"):
            LiveViewer(ViewerConfig(enabled=True, port=port), tmp_path)
        cfg = compose_run(["viewer.enabled=true", f"viewer.port={port}"])
        with pytest.raises(ConfigError, match="viewer.port"):
            runner.build_trainer(cfg, tmp_path)  # the runner builds the trainer before fit


def test_viewer_values_are_checked():
    with pytest.raises(ValueError, match="port"):
        ViewerConfig(port=70000)
    with pytest.raises(ValueError, match="refresh_every"):
        ViewerConfig(refresh_every=0)


def test_live_viewer_page_in_a_browser(tmp_path, toy_cache, monkeypatch):
    """Headless Chromium opens the page while the run holds after step 1: the shape is in the scene (viser's
    record, and the page's WebGL canvas shows it: a screenshot that is not blank and changes when the mesh is
    hidden); then Resume is pressed in the page and the run finishes."""
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))
    cfg = compose_run(["trainer.max_steps=1", "trainer.val_check_interval=1", "viewer.enabled=true", "viewer.port=0",
                       "viewer.refresh_every=1", "viewer.mesh_resolution=32"])
    recorder = Recorder(monkeypatch)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    seen: dict = {}

    def look(viewer: LiveViewer) -> None:
        with browser_page() as page:
            page.goto(viewer.url)
            page.wait_for_selector("canvas", timeout=60_000)
            wait_for(lambda: len(viewer.server.get_clients()) == 1, "the page to connect")
            seen["webgl"] = page.evaluate(
                "() => { const c = document.querySelector('canvas');"
                " return !!(c && (c.getContext('webgl2') || c.getContext('webgl'))); }")
            page.wait_for_timeout(4000)  # the scene's messages arrive and three.js draws
            page.screenshot(path=shots / "live-viewer.png")
            shape = viewer.server.scene._handle_from_node_name[MESH_NODE]
            shape.visible = False
            page.wait_for_timeout(1500)
            page.screenshot(path=shots / "live-viewer-no-shape.png")
            shape.visible = True
            seen["names"] = scene_names(viewer)
            page.get_by_role("button", name="Resume").click()  # the page's own button lets the run go on
            wait_for(lambda: not viewer.paused, "Resume pressed in the page")
            seen["errors"] = list(page.console_errors)

    recorder.run_with(cfg, tmp_path / "run", look)
    assert seen["webgl"], "no WebGL canvas on the page"
    assert MESH_NODE in seen["names"] and f"{CAMERAS_NODE}/0" in seen["names"]
    assert image_spread(shots / "live-viewer.png") > 5, "the screenshot is blank"
    assert pixel_difference(shots / "live-viewer.png", shots / "live-viewer-no-shape.png") > 0.2, \
        "hiding the mesh changed nothing on screen: the shape is not drawn"
    assert recorder.viewers[0].steps == [1] and (tmp_path / "run" / "metrics.json").is_file()  # resumed from the page: the run ended
