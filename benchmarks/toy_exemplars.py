"""Benchmark: toy exemplar rendering and exact-score predict_noise (prints figures)."""
import argparse, math, sys, time, tempfile
import torch
sys.path.insert(0, ".")
from framework.cameras import orbit_c2w
from models.priors.toy.scenes import parse_prompt
from models.priors.toy.render import render_scene
from models.priors.toy.exact_score import ToyExactScorePrior, ToyExactScorePriorConfig

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=torch.get_num_threads())
ap.add_argument("--views", type=int, default=1024)
a = ap.parse_args()
torch.set_num_threads(a.threads)
print(f"threads={torch.get_num_threads()}")
g = torch.Generator().manual_seed(0)
n = a.views
el = -10 + 100 * torch.rand(n, generator=g); az = -180 + 360 * torch.rand(n, generator=g)
d = 1.0 + 0.5 * torch.rand(n, generator=g); fov = torch.deg2rad(40 + 30 * torch.rand(n, generator=g))
c2w = orbit_c2w(el, az, d)
for prompt in ["a red sphere", "a blue cube", "a green torus", "a purple cone", "a red cone on top of a blue cube"]:
    scene = parse_prompt(prompt)
    for ss in (1, 2):
        w0, c0 = time.perf_counter(), time.process_time()
        render_scene(scene, c2w, fov, 64, 64, ss)
        print(f"render {n} views 64x64 ss={ss} {prompt!r}: wall {time.perf_counter()-w0:.2f} s, cpu {time.process_time()-c0:.2f} s")
with tempfile.TemporaryDirectory() as tmp:
    prior = ToyExactScorePrior(ToyExactScorePriorConfig(prompt="a red sphere", cache_dir=tmp, supersample=1, n_uncond_exemplars=64))
    batch = dict(elevation=torch.tensor([10.0]), azimuth=torch.tensor([30.0]), distance=torch.tensor([1.2]), fovy=torch.tensor([0.9]))
    x = torch.randn(1, 3, 64, 64); t = torch.tensor([500])
    w0 = time.perf_counter(); prior.predict_noise(x, t, "a red sphere", batch, True)
    print(f"first call (render 1024 + 30x64 exemplars, ss=1): {time.perf_counter()-w0:.2f} s")
    for need_uncond in (False, True):
        w0 = time.perf_counter()
        for _ in range(50):
            prior.predict_noise(x, t, "a red sphere", batch, need_uncond)
        print(f"predict_noise B=1 k=16 need_uncond={need_uncond}: {(time.perf_counter()-w0)/50*1000:.2f} ms")
