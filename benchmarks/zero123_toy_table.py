"""Scores of image-to-3D on the toy world: one RGBA picture of each prompt's scene from a reference
elevation (models/priors/toy/picture.py, 256², azimuth 0, the toy camera), then one launch.py run per
(prompt, elevation), a few at a time, and a table of IoU / Chamfer / colour error / wall time.

    .venv/bin/python benchmarks/zero123_toy_table.py --config zero123-toy [--elevations 15,30] \\
        [--prompts "a red cube,a blue cone"] [--parallel 2] [--out DIR] [override ...]

The default prompts are TOYWORLD.md's five held-out single shapes (one colour each) and one composite.
Runs as benchmarks/toy_prompt_table.py runs them (OMP_NUM_THREADS=1 each, so `--parallel` runs share the
cores evenly). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.priors.toy.picture import save_picture  # noqa: E402
from models.priors.toy.scenes import HELD_OUT_SINGLE_PROMPTS  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from toy_prompt_table import run_launch  # noqa: E402

COMPOSITE = "a red sphere on top of a blue cube"


def run_one(config: str, prompt: str, elevation: float, out_root: Path, overrides: list[str]) -> dict[str, float]:
    name = f"{prompt.replace(' ', '_')}@{elevation:g}"
    picture = save_picture(out_root / "pictures" / f"{name}_rgba.png", prompt, elevation, size=256)
    return run_launch(config, out_root / name, [f"data.image_path={picture}", f"data.default_elevation_deg={elevation}",
                                                f"system.evaluator.scene={prompt}", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="zero123-toy")
    parser.add_argument("--elevations", type=lambda s: [float(x) for x in s.split(",")], default=[15.0, 30.0])
    parser.add_argument("--prompts", type=lambda s: s.split(","), default=None,
                        help=f'comma-separated; default: the five held-out single shapes and "{COMPOSITE}"')
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "outputs" / "zero123-table"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    prompts = args.prompts or [*HELD_OUT_SINGLE_PROMPTS, COMPOSITE]
    out_root = Path(args.out) / args.config
    jobs = [(p, e) for e in args.elevations for p in prompts]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda job: run_one(args.config, *job, out_root, args.overrides), jobs))

    print(f"\n{args.config} {' '.join(args.overrides)}  (runs in {out_root})\n")
    print("| picture | elevation | IoU | Chamfer | colour error | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (prompt, elevation), m in zip(jobs, results):
        if m.get("failed"):
            print(f"| {prompt} | {elevation:g} | failed | | | {m['wall_seconds']:.0f} |")
            continue
        print(f"| {prompt} | {elevation:g} | {m['iou']:.3f} | {m['chamfer']:.4f} | {m['colour_error']:.3f} | {m['wall_seconds']:.0f} |")
    for elevation in args.elevations:
        rows = [m for (p, e), m in zip(jobs, results) if e == elevation and p != COMPOSITE and not m.get("failed")]
        if rows:
            print(f"| mean single shapes ({len(rows)}) | {elevation:g} | {statistics.mean(r['iou'] for r in rows):.3f} | "
                  f"{statistics.mean(r['chamfer'] for r in rows):.4f} | {statistics.mean(r['colour_error'] for r in rows):.3f} | "
                  f"{statistics.mean(r['wall_seconds'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
