"""The README demo, two commits side by side: wall time after set-up, IoU and Chamfer per prompt.

    .venv/bin/python benchmarks/demo_side_by_side.py --old 957fc30 --new HEAD \
        [--prompts "a red cube" "a red torus" "a red cone"] [--kernel cold|built|setup] [--workdir DIR]
        [--order old-first|new-first]

Each commit is cloned fresh from this repository and set up with its own `make setup` (its own
virtual environment; the set-up's time is printed, not counted). Then, for each prompt, the old and
the new demo (`make demo PROMPT=...`) run one after the other, so machine load hits both alike.
Every demo starts with an empty toy cache (the exemplar bank is rendered in the timed run, as on a
fresh machine). The hash grid's C++ kernel:
  --kernel cold   every demo compiles it in the timed run (an empty TORCH_EXTENSIONS_DIR each time);
  --kernel built  it is built once per commit before timing (what `make setup` does from this commit on).
  --kernel setup  every demo starts from what that commit's own `make setup` left (a copy of its extension
                  folder): a commit whose set-up builds the kernel does not compile in the timed run, one
                  whose set-up does not compiles it there, as each would on a fresh machine.
--order new-first runs each prompt's new demo before its old one (what follows a demo may start slower
while the machine settles: run both orders to see it). Prints one line per demo and a table of ratios;
asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_KERNEL = "from models.encodings.hash_grid import load_cpp_kernel; load_cpp_kernel()"


def clone(commit: str, workdir: Path) -> Path:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", commit], capture_output=True, text=True,
                         check=True).stdout.strip()
    target = workdir / sha
    if not target.exists():
        subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True)
        subprocess.run(["git", "-C", str(target), "checkout", "-q", sha], check=True)
    return target


def set_up(checkout: Path, kernel: str, extensions: Path) -> None:
    start = time.perf_counter()
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions))
    subprocess.run(["make", "setup"], cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
    if kernel == "built":  # older commits' set-up does not build it: build it the same way for both
        subprocess.run([str(checkout / ".venv/bin/python"), "-c", BUILD_KERNEL], cwd=checkout, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    print(f"set-up {checkout.name}: {time.perf_counter() - start:.0f} s (not counted)", flush=True)


def demo(checkout: Path, prompt: str, kernel: str, extensions: Path) -> dict[str, float]:
    cache = Path(tempfile.mkdtemp(prefix="demo-cache-"))
    ext = extensions if kernel == "built" else cache / "torch_extensions"
    if kernel == "setup":  # a fresh copy of what the set-up left, so one demo's compile does not serve the next
        shutil.copytree(extensions, ext) if extensions.exists() else ext.mkdir()
    env = dict(os.environ, TOY3D_CACHE=str(cache / "toy3d"), TORCH_EXTENSIONS_DIR=str(ext))
    start = time.perf_counter()
    proc = subprocess.run(["make", "demo", f"PROMPT={prompt}"], cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{checkout.name} '{prompt}' failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    run_dir = re.findall(r"^run directory: (.+)$", proc.stdout, re.M)[-1].strip()
    metrics = json.loads((checkout / run_dir / "metrics.json").read_text() if not os.path.isabs(run_dir)
                         else Path(run_dir, "metrics.json").read_text())
    return {"wall": wall, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="957fc30")
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--prompts", nargs="+", default=["a red cube", "a red torus", "a red cone"])
    parser.add_argument("--kernel", choices=("cold", "built", "setup"), default="cold")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "demo-side-by-side")
    parser.add_argument("--order", choices=("old-first", "new-first"), default="old-first")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    checkouts = {name: clone(commit, args.workdir) for name, commit in (("old", args.old), ("new", args.new))}
    extensions = {name: args.workdir / f"torch_extensions-{c.name}" for name, c in checkouts.items()}
    for name, checkout in checkouts.items():
        set_up(checkout, args.kernel, extensions[name])
    rows = []
    for prompt in args.prompts:
        result = {}
        for name in (("old", "new") if args.order == "old-first" else ("new", "old")):
            checkout = checkouts[name]
            result[name] = demo(checkout, prompt, args.kernel, extensions[name])
            r = result[name]
            print(f"demo {checkout.name} '{prompt}' kernel={args.kernel}: wall {r['wall']:.1f} s "
                  f"(train {r.get('train_seconds', float('nan')):.1f} s) iou {r['iou']:.4f} chamfer {r['chamfer']:.4f} "
                  f"colour {r['colour_error']:.4f}", flush=True)
        rows.append((prompt, result))
    old, new = checkouts["old"].name, checkouts["new"].name
    print(f"\n| prompt | {old} wall s | {new} wall s | new/old | {old} IoU | {new} IoU | {old} Chamfer | {new} Chamfer |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for prompt, r in rows:
        print(f"| {prompt} | {r['old']['wall']:.1f} | {r['new']['wall']:.1f} | {r['new']['wall'] / r['old']['wall']:.3f} | "
              f"{r['old']['iou']:.4f} | {r['new']['iou']:.4f} | {r['old']['chamfer']:.4f} | {r['new']['chamfer']:.4f} |")


if __name__ == "__main__":
    main()
