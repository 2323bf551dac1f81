"""ProlificDreamer stage 1 (VSD) with full-size random SD-2.1-base UNet + VAE and LoRA: s/step and
peak memory at each render size, one model or two, ordinary or chunked rendering.

    .venv/bin/python benchmarks/prolificdreamer_sd.py [--sizes 64,512] [--steps 2] [--warmup 1] \\
        [--chunk 4096] [--folder DIR] [--variants one,two] [override ...]

Each variant runs benchmarks/dreamfusion_sd.py --config prolificdreamer in its own process, so its
peak host memory (and on CUDA its peak GPU memory) is its own. The published config renders 512
samples per ray; on a CPU a 512² step at that count takes many minutes, so pass e.g.
`system.renderer.num_samples_per_ray=64` there and say so. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 512])
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["one", "two"])
    parser.add_argument("--chunk", type=int, default=4096, help="grad_chunk_rays of the chunked rows")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--folder", default=None, help="where to keep the random SD folder (reused if present)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="sd21-random-")

    rows = []
    for size in args.sizes:
        for variant in args.variants:
            for chunk in (None, args.chunk):
                overrides = [
                    f"data.height={size}", f"data.width={size}", "data.resolution_milestones=[]",
                    *(["system.guidance.lora_model_name_or_path=null"] if variant == "one" else []),
                    *([f"system.renderer.grad_chunk_rays={chunk}"] if chunk else []),
                    *args.overrides,
                ]
                command = [sys.executable, str(REPO / "benchmarks" / "dreamfusion_sd.py"), "--config", "prolificdreamer",
                           "--steps", str(args.steps), "--warmup", str(args.warmup), "--folder", folder, *overrides]
                result = subprocess.run(command, capture_output=True, text=True)
                text = result.stdout
                print(text.strip() or result.stderr[-1500:], flush=True)
                ms = re.search(r"\((\d+) ms/step\)", text)
                gpu = re.search(r"peak GPU memory allocated: ([\d.]+) GiB", text)
                host = re.search(r"peak resident host memory: (\d+) MiB", text)
                rows.append((size, variant, chunk, ms and int(ms.group(1)) / 1000, gpu and float(gpu.group(1)),
                             host and int(host.group(1)), result.returncode))

    print("\n| render | models | grad_chunk_rays | s/step | peak GPU GiB | peak host MiB | exit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size, variant, chunk, s, gpu, host, rc in rows:
        print(f"| {size}² | {variant} | {chunk or '-'} | {s if s is not None else 'failed'} | {gpu or '-'} | {host or '-'} | {rc} |")


if __name__ == "__main__":
    main()
