"""Training speed and peak memory of a Stable Diffusion method config (dreamfusion-sd by default,
or --config prolificdreamer, ...) with a full-size Stable Diffusion 2.1-base.

    .venv/bin/python benchmarks/dreamfusion_sd.py [--config dreamfusion-sd] [--steps 50] [--warmup 10] \
        [--folder DIR] [override ...]

The real weights can't be downloaded everywhere, and speed does not depend on weight values, so
this builds the published SD-2.1-base UNet and VAE configurations with random weights, saves them
in diffusers' layout (fp16 files, ~1.7 GB, reused with --folder) and loads them through the
project's real loading code. The text embeddings are pre-filled in the embedding cache, as on a
second real run, so the CLIP encoder is not needed. Then it builds the dreamfusion-sd system from
its config (threestudio's defaults: 64² renders, 512 samples per ray, fp16 UNet on CUDA under
16-mixed autocast) and times full training steps (render, VAE encode with gradients, UNet on
[cond, uncond], backward, Adam) outside Lightning. A VSD config with a second (LoRA) model gets a
sibling folder with the same random weights and a v-prediction scheduler, as SD-2.1 is. Prints
figures; asserts nothing.

On a CPU one step takes tens of seconds: use --steps 2 --warmup 1 to check that it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.config import instantiate  # noqa: E402
from launch import slug  # noqa: E402,F401  (registers schemas and resolvers)
from models.priors.tiny_pipelines import save_tiny_stable_diffusion  # noqa: E402
from models.prompt_processors.embedding_cache import EmbeddingCache  # noqa: E402
from models.prompt_processors.text import StableDiffusionPromptProcessor, text_model_key  # noqa: E402
from models.prompt_processors.view_dependent import view_prompts  # noqa: E402

# stabilityai/stable-diffusion-2-1-base: unet/config.json, vae/config.json, scheduler/scheduler_config.json
UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", clip_sample=False,
)
TEXT_TOKENS, TEXT_WIDTH = 77, 1024  # OpenCLIP ViT-H/14 text encoder output of SD 2.x


def build_folder(folder: Path) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if all((folder / part).is_dir() for part in ("unet", "vae", "scheduler", "text_encoder", "tokenizer")):
        return folder
    t0 = time.perf_counter()
    torch.manual_seed(0)
    if not (folder / "unet").is_dir():
        UNet2DConditionModel(**UNET).half().save_pretrained(folder / "unet")
    if not (folder / "vae").is_dir():
        AutoencoderKL(**VAE).half().save_pretrained(folder / "vae")
    DDPMScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
    # The prior checks the folder holds every part of the layout; the text side here is the tests' tiny
    # stand-in, never loaded: the embeddings are prefilled in the cache (run() asserts no encoder load).
    if not ((folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir()):
        with tempfile.TemporaryDirectory() as tiny:
            save_tiny_stable_diffusion(tiny)
            for part in ("text_encoder", "tokenizer"):
                shutil.copytree(Path(tiny) / part, folder / part, dirs_exist_ok=True)
    print(f"  built random SD-2.1-base UNet + VAE in {folder} ({time.perf_counter() - t0:.0f} s)")
    return folder


def build_v_prediction_sibling(folder: Path) -> Path:
    """The same UNet as `folder` with a v-prediction scheduler (SD-2.1's, for VSD's second model)."""
    from diffusers import DDPMScheduler

    sibling = folder.parent / f"{folder.name}-v"
    sibling.mkdir(exist_ok=True)
    if not (sibling / "unet").exists():
        (sibling / "unet").symlink_to((folder / "unet").resolve())
    DDPMScheduler(**dict(SCHEDULER, prediction_type="v_prediction")).save_pretrained(sibling / "scheduler")
    return sibling


def prefill_embeddings(cache_dir: Path, model_key: str, prompt: str, negative: str) -> None:
    cache = EmbeddingCache(str(cache_dir))
    g = torch.Generator().manual_seed(0)
    for text in [prompt, negative, *view_prompts(prompt)]:
        cache.put(model_key, text, torch.randn(TEXT_TOKENS, TEXT_WIDTH, generator=g))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="dreamfusion-sd")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--folder", default=None, help="where to keep the random SD folder (reused if present)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    folder = build_folder(Path(args.folder or tempfile.mkdtemp(prefix="sd21-random-")))
    cache_dir = Path(tempfile.mkdtemp(prefix="sd-text-cache-"))
    prompt = "a hamburger"
    overrides = [
        f"system.prompt={prompt}",
        f"system.guidance.prior.pretrained_model_name_or_path={folder}",
        f"system.prompt_processor.cache_dir={cache_dir}",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=args.config, overrides=overrides)
        if cfg.system.guidance.get("lora_model_name_or_path"):
            sibling = build_v_prediction_sibling(folder)
            cfg = compose(config_name=args.config, overrides=[*overrides, f"system.guidance.lora_model_name_or_path={sibling}"])
    key = text_model_key(StableDiffusionPromptProcessor.__name__, str(folder))
    prefill_embeddings(cache_dir, key, prompt, cfg.system.prompt_processor.negative_prompt)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    data = instantiate(cfg.data)
    t0 = time.perf_counter()
    system = instantiate(cfg.system, run_dir=tempfile.mkdtemp()).to(device)
    load_s = time.perf_counter() - t0
    assert system.prompt_processor.encoder_loads == 0, "the text encoder should not be needed"
    optimizer = system.configure_optimizers()
    stream = iter(data.train_dataloader())
    # Lightning's 16-mixed: fp16 autocast on CUDA, with a gradient scaler.
    mixed = device.type == "cuda" and str(cfg.trainer.precision) == "16-mixed"
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if mixed else contextlib.nullcontext

    def to_device(batch):
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def step(i: int) -> None:
        data.update_step(i)
        system.update_step(i)
        batch = to_device(next(stream))
        with autocast():
            out = system.render(batch)
            losses = system.compute_losses(batch, out)
            total, _ = system.loss_weights.combine(losses, i)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    system.log = lambda *a, **k: None  # no trainer attached: logging is Lightning's job
    for i in range(args.warmup):
        step(i)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    sync()
    elapsed = time.perf_counter() - t0

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lora = cfg.system.guidance.get("lora_model_name_or_path", "n/a")
    chunk = cfg.system.renderer.get("grad_chunk_rays")
    print(f"{args.config}, random full-size SD-2.1-base, {cfg.data.height}x{cfg.data.width} renders, batch "
          f"{cfg.data.batch_size}, {cfg.system.renderer.num_samples_per_ray} samples/ray, on {name}")
    print(f"  guidance {cfg.system.guidance._target_.rsplit('.', 1)[-1]}, LoRA model {lora}, grad_chunk_rays {chunk}")
    print(f"  precision: {'16-mixed autocast, fp16 UNet/VAE' if mixed else 'fp32'}; prior loaded in {load_s:.1f} s")
    print(f"  training: {args.steps / elapsed:.2f} it/s ({1000 * elapsed / args.steps:.0f} ms/step) over "
          f"{args.steps} steps after {args.warmup} warm-up")
    if device.type == "cuda":
        print(f"  peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
              f"(reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB)")
    print(f"  peak resident host memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
