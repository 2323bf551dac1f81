"""Scores of a toy method config on held-out and trained prompts: one launch.py run per prompt,
a few at a time, then a table of IoU / Chamfer / colour error / wall time from each metrics.json.

    .venv/bin/python benchmarks/toy_prompt_table.py --config dreamfusion-toy-unet [--parallel 2] \
        [--prompts "a orange cube,a purple cone"] [override ...]

The default prompts are TOYWORLD.md's five held-out single shapes and five trained ones (those the
text-to-image toy prior's sample check uses). Each run gets OMP_NUM_THREADS=1 so `--parallel` runs
share the cores evenly. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.priors.toy.scenes import HELD_OUT_SINGLE_PROMPTS  # noqa: E402
from models.priors.toy.training.train_text_prior import TRAINED_SINGLES  # noqa: E402


def run_launch(config: str, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """One launch.py run into run_dir (emptied first) -> its metrics.json plus wall_seconds (or failed)."""
    # A run into an old run's folder would sit beside its checkpoints (Lightning names the new ones
    # last-v1.ckpt, ...), and resume=<run>/ckpts/last.ckpt would then pick up the old run's weights.
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "--config-name", config, f"hydra.run.dir={run_dir}",
         "trainer.enable_progress_bar=false", *overrides],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"{run_dir.name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
        return {"wall_seconds": wall, "failed": 1.0}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_seconds"] = wall
    return metrics


def run_one(config: str, prompt: str, out_root: Path, overrides: list[str]) -> dict[str, float]:
    return run_launch(config, out_root / prompt.replace(" ", "_"), [f"system.prompt={prompt}", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="dreamfusion-toy-unet")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "outputs" / "prompt-table"))
    # comma-separated, not nargs="*": a list option before the overrides would swallow them as prompts
    parser.add_argument("--prompts", type=lambda s: s.split(","), default=None,
                        help='e.g. "a orange cube,a purple cone"; default: 5 held-out + 5 trained single shapes')
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    prompts = args.prompts or [*HELD_OUT_SINGLE_PROMPTS, *TRAINED_SINGLES]
    out_root = Path(args.out) / args.config
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda p: run_one(args.config, p, out_root, args.overrides), prompts))

    print(f"\n{args.config} {' '.join(args.overrides)}  (runs in {out_root})\n")
    print("| prompt | split | IoU | Chamfer | colour error | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for prompt, m in zip(prompts, results):
        split = "held-out" if prompt in HELD_OUT_SINGLE_PROMPTS else "trained"
        if m.get("failed"):
            print(f"| {prompt} | {split} | failed | | | {m['wall_seconds']:.0f} |")
            continue
        print(f"| {prompt} | {split} | {m['iou']:.3f} | {m['chamfer']:.4f} | {m['colour_error']:.3f} | {m['wall_seconds']:.0f} |")
    for split, names in (("held-out", HELD_OUT_SINGLE_PROMPTS), ("trained", TRAINED_SINGLES)):
        rows = [m for p, m in zip(prompts, results) if p in names and not m.get("failed")]
        if rows:
            print(f"| mean {split} ({len(rows)}) | | {statistics.mean(r['iou'] for r in rows):.3f} | "
                  f"{statistics.mean(r['chamfer'] for r in rows):.4f} | {statistics.mean(r['colour_error'] for r in rows):.3f} | "
                  f"{statistics.mean(r['wall_seconds'] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
