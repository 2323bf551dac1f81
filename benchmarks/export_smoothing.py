"""Does Taubin smoothing of the exported surface (system.export.smooth_iterations) help? Prints IoU, Chamfer
and colour error of one trained toy run exported with each number of iterations.

    .venv/bin/python benchmarks/export_smoothing.py --prompt "a red torus" [--checkpoint <run>/ckpts/last.ckpt]
        [--iterations 0 3 10 30] [--config-name dreamfusion-toy]

Without --checkpoint it first trains the config's default run (its turntable shortened to 12 views) in a
temporary folder. Each export is `launch.py mode=export resume=<checkpoint>` at texture 256 (the texture
size does not change the geometry scores), scored by the toy evaluator like any run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(args: list[str]) -> None:
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"launch.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a red torus")
    parser.add_argument("--config-name", default="dreamfusion-toy")
    parser.add_argument("--checkpoint", type=Path, help="a trained run's checkpoint (default: train one first)")
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 3, 10, 30])
    args = parser.parse_args()
    base = ["--config-name", args.config_name, f"system.prompt={args.prompt}", "trainer.enable_progress_bar=false"]
    work = Path(tempfile.mkdtemp(prefix="export_smoothing_"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        start = time.perf_counter()
        launch([*base, "data.n_test_views=12", f"hydra.run.dir={work / 'train'}"])
        checkpoint = work / "train" / "ckpts" / "last.ckpt"
        print(f"trained {checkpoint} in {time.perf_counter() - start:.0f} s")
    print(f"{args.prompt!r}, {checkpoint}")
    print(f"{'iterations':>10} {'iou':>7} {'chamfer':>8} {'colour':>7} {'faces':>6}")
    for k in args.iterations:
        run = work / f"export-{k}"
        launch([*base, "mode=export", f"resume={checkpoint}", f"system.export.smooth_iterations={k}",
                "system.export.texture_size=256", f"hydra.run.dir={run}"])
        m = json.loads((run / "metrics.json").read_text())
        print(f"{k:>10} {m['iou']:7.4f} {m['chamfer']:8.5f} {m['colour_error']:7.4f} {int(m['n_faces']):>6}")


if __name__ == "__main__":
    main()
