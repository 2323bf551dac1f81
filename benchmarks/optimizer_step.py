"""Optimizer step time for the toy demo's parameters: torch's per-tensor loop, foreach, and fused, side by side.

The toy DreamFusion geometry (configs/dreamfusion-toy.yaml's hash grid and MLPs) built on the CPU with random gradients, then
`--steps` optimizer steps of each kind, one after the other in this process. Prints one line per kind:
`optimizer <kind> <ms per step> ratio <loop / kind>`, and the largest parameter difference to the loop's
after the same steps (the fused update is the same maths, so only float rounding).

Usage: python benchmarks/optimizer_step.py [--steps 200] [--name Adam]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.optim import OptimizerConfig, build_optimizer  # noqa: E402
from models.encodings.hash_grid import HashGridConfig  # noqa: E402
from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--name", default="Adam")
    args = parser.parse_args()
    torch.manual_seed(0)
    # the demo's geometry: 12 levels x 2^17 entries x 2 features, plus the density and feature MLPs
    encoding = HashGridConfig(n_levels=12, log2_hashmap_size=17, base_resolution=16, per_level_scale=1.2866)
    geometry = ImplicitVolume(ImplicitVolumeConfig(radius=0.625, pos_encoding=encoding))
    n_params = sum(p.numel() for p in geometry.parameters())
    print(f"{n_params / 1e6:.2f} M parameters in {len(list(geometry.parameters()))} tensors, {torch.get_num_threads()} threads")
    base = OptimizerConfig(name=args.name)
    results = {}
    for kind, extra in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        model = copy.deepcopy(geometry)
        torch.manual_seed(1)  # the same gradients for every kind
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        try:
            optimizer = build_optimizer(model, OptimizerConfig(name=base.name, args={**base.args, **extra}))
        except (TypeError, RuntimeError) as error:  # Adamax & co. have no fused (or foreach) implementation
            print(f"optimizer {kind}: not available for {args.name} ({error})")
            continue
        for _ in range(5):
            optimizer.step()
        start = time.perf_counter()
        for _ in range(args.steps):
            optimizer.step()
        results[kind] = ((time.perf_counter() - start) / args.steps * 1e3, model)
    loop_ms, loop_model = results["loop"]
    for kind, (ms, model) in results.items():
        diff = max((a - b).abs().max().item() for a, b in zip(loop_model.parameters(), model.parameters()))
        print(f"optimizer {kind} {ms:.2f} ms ratio {loop_ms / ms:.2f} max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
