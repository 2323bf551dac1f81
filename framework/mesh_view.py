"""`python -m framework view <folder>`: a finished run's exported mesh in the viewer's page.

<folder> is a run folder (it has save/export/) or any folder of runs, such as a sweep folder; then
every run's mesh under it stands in a row, in folder order, each labelled with its run folder's name
(and its IoU, when the run was scored). The textured GLB (save/export/model.glb) is shown, or the OBJ
with its texture when the run exported no GLB. The page is served until Ctrl-C:

    python -m framework view outputs/dreamfusion-toy/a_red_cube@20261201-180000
    python -m framework view outputs/dreamfusion-toy/sweep@20261201-180000 --port 0
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from framework.errors import UserError
from framework.export import WORLD_TO_GLTF
from framework.viser_server import start_server, stop_server, url_of

EXPORT_DIR = Path("save") / "export"


@dataclass
class RunMesh:
    run_dir: Path
    label: str
    mesh: Any  # a trimesh.Trimesh in world coordinates (+z up), textured
    source: Path


def find_exports(folder: Path) -> list[Path]:
    """The export folders to show: <folder>/save/export, else every <run>/save/export under folder."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder. Name a run folder (outputs/<method>/<tag>@<time>) or a sweep folder.")
    if (folder / EXPORT_DIR).is_dir():
        exports = [folder / EXPORT_DIR]
    else:
        exports = sorted({p.parent for pattern in ("model.glb", "model.obj") for p in folder.rglob(f"{EXPORT_DIR}/{pattern}")})
    exports = [e for e in exports if (e / "model.glb").is_file() or (e / "model.obj").is_file()]
    if not exports:
        raise UserError(
            f"no exported mesh in {folder} (no {EXPORT_DIR}/model.glb or model.obj, nor in a run folder under it). "
            "A training run exports when it ends; export a checkpoint with "
            "`python launch.py --config-name <method> mode=export resume=<run>/ckpts/last.ckpt`."
        )
    return exports


def load_mesh(export_dir: Path) -> tuple[Any, Path]:
    """The run's textured mesh as one trimesh.Trimesh in world coordinates (+z up), and the file read."""
    import trimesh

    glb = export_dir / "model.glb"
    source = glb if glb.is_file() else export_dir / "model.obj"
    loaded = trimesh.load(source, process=False)
    if isinstance(loaded, trimesh.Scene):  # a GLB is a scene of one mesh: that mesh, its node's transform applied
        loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
    mesh = loaded
    if source.suffix == ".glb":  # glTF is +y up (framework/export.py): back to the world
        transform = np.eye(4)
        transform[:3, :3] = WORLD_TO_GLTF.T
        mesh.apply_transform(transform)
    return mesh, source


def run_label(run_dir: Path, root: Path) -> str:
    name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    metrics_file = run_dir / "metrics.json"
    try:
        iou = json.loads(metrics_file.read_text()).get("iou") if metrics_file.is_file() else None
    except (OSError, ValueError):
        iou = None
    return f"{name}  IoU {iou:.3f}" if isinstance(iou, (int, float)) else name


def load_runs(folder: Path) -> list[RunMesh]:
    runs = []
    for export_dir in find_exports(folder):
        run_dir = export_dir.parent.parent
        mesh, source = load_mesh(export_dir)
        runs.append(RunMesh(run_dir, run_label(run_dir, folder), mesh, source))
    return runs


def show_runs(server: Any, runs: list[RunMesh]) -> list[str]:
    """Put the meshes in a row along +y, centred, each with its label above it; returns the scene node names."""
    size = max(float(np.max(np.abs(r.mesh.bounds))) for r in runs)
    spacing = 2.6 * max(size, 1e-3)
    offsets = (np.arange(len(runs)) - 0.5 * (len(runs) - 1)) * spacing
    names = []
    for i, (run, offset) in enumerate(zip(runs, offsets)):
        name = f"/runs/{i}"
        with io.BytesIO() as buffer:
            run.mesh.export(buffer, file_type="glb")  # trimesh keeps the coordinates as they are: +z up here
            server.scene.add_glb(name, buffer.getvalue(), position=(0.0, float(offset), 0.0))
        top = float(run.mesh.bounds[1][2])
        server.scene.add_label(f"/labels/{i}", run.label, position=(0.0, float(offset), top + 0.15 * spacing))
        names.append(name)
    width = float(offsets[-1] - offsets[0]) + spacing
    distance = max(3.0 * size, 0.9 * width) + 2.5 * size
    server.initial_camera.position = (distance, 0.0, 0.5 * distance)
    server.initial_camera.look_at = (0.0, 0.0, 0.0)
    server.initial_camera.up = (0.0, 0.0, 1.0)
    server.scene.add_grid("/ground", width=width + spacing, height=2 * spacing, cell_size=0.25,
                          position=(0.0, 0.0, float(min(r.mesh.bounds[0][2] for r in runs))))
    return names


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8080) -> tuple[Any, list[RunMesh]]:
    """Start the page for `folder` and return (server, runs) without blocking (`main` then waits)."""
    runs = load_runs(folder)
    server = start_server(host, port, "--port")
    server.gui.add_markdown("\n".join(f"- **{r.label}**  \n  `{r.source}`" for r in runs))
    show_runs(server, runs)
    return server, runs


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framework view", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run folder (with save/export/) or a folder of runs (a sweep)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: any)")
    parser.add_argument("--port", type=int, default=8080, help="port of the page (0: any free port)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535] (0: any free port), not {args.port}")
    try:
        server, runs = serve(args.folder, args.host, args.port)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    print(f"viewing {len(runs)} mesh{'es' if len(runs) > 1 else ''} at {url_of(server)} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(server)
    return 0
