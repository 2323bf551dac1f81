"""Training the view-conditioned toy prior (Zero-1-to-3 form) through the launcher.

    OMP_NUM_THREADS=1 python launch.py --config-name train-toy-view-prior

Data: pairs of views of one toy scene (models/priors/toy/view_pair_data.py). The model
(models/priors/toy/view_prior.py) predicts the noise of the noised TARGET view given the COND view
(concatenated channels + one cross-attention token from the image embedding and the relative pose T).
With probability condition_dropout both conditions are zeroed, which trains the unconditional branch
the way Zero123Prior / threestudio's zero123 guidance queries it (zeros for both).

The sample check renders a cond view of trained and held-out single prompts, samples novel views at
fixed relative cameras (DDIM, classifier-free guidance eps_u + s (eps_c - eps_u)) and scores them
against the TRUE render of that camera: mean absolute pixel error and silhouette IoU (foreground =
pixels with max |rgb - 1| > fg_threshold), per split; plus the error of simply copying the cond view
(a no-learning baseline the samples must beat).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.value_checks import between, check_fields, greater_than, inside, list_of, number, tuple_of
from models.priors.toy.scenes import HELD_OUT_SINGLE_PROMPTS
from models.priors.toy.view_prior import IMAGE_MEAN, IMAGE_STD, ToyViewPriorArch, build_view_prior, save_view_prior_folder
from models.priors.zero123 import condition_tokens, encoder_pixels, relative_pose
from models.priors.toy.training.prior_training import PriorTrainingConfig, PriorTrainingSystem

ORBIT_CAMERA = tuple_of(between(-90, 90), number(), greater_than(0))
"""[elevation (degrees), azimuth (degrees), distance]."""


@dataclass
class ToyViewPriorTrainingConfig(PriorTrainingConfig):
    _target_: str = "models.priors.toy.training.train_view_prior.ToyViewPriorTraining"
    arch: ToyViewPriorArch = field(default_factory=ToyViewPriorArch)
    trained_check_prompts: List[str] = field(
        default_factory=lambda: ["a red cube", "a blue torus", "a green cone", "a purple cylinder", "a red cube on top of a blue cylinder"]
    )
    held_out_check_prompts: List[str] = field(default_factory=lambda: list(HELD_OUT_SINGLE_PROMPTS))
    """TOYWORLD.md's held-out single shapes (models/priors/toy/scenes.py)."""
    cond_camera: List[float] = field(default_factory=lambda: [20.0, 0.0, 1.6])
    """Cond view of the check: elevation (deg), azimuth (deg), distance."""
    check_cameras: List[List[float]] = field(
        default_factory=lambda: [[20.0, 90.0, 1.6], [20.0, 180.0, 1.6], [50.0, -90.0, 1.6], [0.0, 45.0, 1.4]]
    )
    """Target cameras of the check (elevation, azimuth, distance): side, back, above, low and near."""
    check_fovy_deg: float = 40.0
    fg_threshold: float = 0.1
    sample_seed: int = 0
    """Seed of the sampling noise: the same noise at every check, so checks compare across steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            cond_camera=ORBIT_CAMERA,
            check_cameras=list_of(ORBIT_CAMERA, min_length=1),
            check_fovy_deg=inside(0, 180),
            fg_threshold=between(0, 1),
        )


class ToyViewPriorTraining(PriorTrainingSystem):
    def __init__(self, cfg: ToyViewPriorTrainingConfig, run_dir: Optional[str] = None, **runtime_objects: Any):
        super().__init__(cfg, run_dir=run_dir)
        self.cfg: ToyViewPriorTrainingConfig = cfg
        parts = build_view_prior(cfg.arch)
        self.nets = nn.ModuleDict({k: parts[k] for k in ("unet", "image_encoder", "cc_projection")})
        self.scheduler = parts["scheduler"]
        self.feature_extractor = parts["feature_extractor"]
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.detach().float().clone(), persistent=False)
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD), persistent=False)
        self.setup_ema()

    def trained_modules(self) -> nn.ModuleDict:
        return self.nets

    # ---- the model --------------------------------------------------------------------------
    def eps(self, x_t: Tensor, t: Tensor, cond: Tensor, pose: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """x_t (B, 3, s, s), t (B,), cond view (B, 3, s, s) in [-1, 1], pose T (B, 4), keep (B,) 0/1 (0 = the
        unconditional branch: zero cond image and zero token) -> eps (B, 3, s, s)."""
        pixels = encoder_pixels((cond + 1.0) / 2.0, self.cfg.arch.image_size, self.image_mean, self.image_std)
        tokens = condition_tokens(self.nets["image_encoder"], self.nets["cc_projection"], pixels, pose)
        if keep is not None:
            tokens = tokens * keep.view(-1, 1, 1)
            cond = cond * keep.view(-1, 1, 1, 1)
        return self.nets["unet"](torch.cat([x_t, cond], dim=1), t, encoder_hidden_states=tokens).sample

    def training_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x0, cond, pose = batch["target"], batch["cond"], batch["T"]
        x_t, t, noise = self.noised(x0, self.alphas_cumprod)
        keep = (~self.drop_mask(x0.shape[0], x0.device)).to(x0.dtype)
        loss = F.mse_loss(self.eps(x_t, t, cond, pose, keep), noise)  # Ho et al. 2020, Eq. 14
        return {"loss": loss}

    @torch.no_grad()
    def sample(self, cond: Tensor, pose: Tensor, steps: int, scale: float, generator: torch.Generator) -> Tensor:
        """DDIM (eta 0) with CFG eps_u + s (eps_c - eps_u). cond (B, 3, s, s) in [-1, 1], pose (B, 4) -> x_0 (B, 3, s, s)."""
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(steps)
        b, s = cond.shape[0], self.cfg.arch.image_size
        x = torch.randn(b, 3, s, s, generator=generator).to(cond)
        keep = torch.cat([torch.ones(b), torch.zeros(b)]).to(cond)
        for t in ddim.timesteps:
            tt = torch.full((2 * b,), int(t), device=cond.device, dtype=torch.long)
            eps_c, eps_u = self.eps(torch.cat([x, x]), tt, torch.cat([cond, cond]), torch.cat([pose, pose]), keep).chunk(2)
            x = ddim.step(eps_u + scale * (eps_c - eps_u), t, x).prev_sample
        return x.clamp(-1.0, 1.0)

    # ---- the check --------------------------------------------------------------------------
    def _render(self, prompt: str, cameras: list[list[float]]) -> Tensor:
        """-> rgb (V, s, s, 3) in [0, 1]: the toy renderer's image of prompt from (elevation, azimuth, distance) cameras."""
        from framework.cameras import orbit_c2w
        from models.priors.toy.render import render_scene
        from models.priors.toy.scenes import parse_prompt

        cams = torch.tensor(cameras, dtype=torch.float32)
        c2w = orbit_c2w(cams[:, 0], cams[:, 1], cams[:, 2])
        fovy = torch.full((len(cameras),), torch.deg2rad(torch.tensor(self.cfg.check_fovy_deg)).item())
        s = self.cfg.arch.image_size
        rgb = render_scene(parse_prompt(prompt), c2w, fovy, s, s, supersample=2)["rgb"].clamp(0, 1)
        return (rgb * 255.0 + 0.5).floor() / 255.0  # quantised like the training cache

    def sample_and_check(self, tag: str) -> dict[str, float]:

        cfg = self.cfg
        prompts = list(cfg.trained_check_prompts) + list(cfg.held_out_check_prompts)
        cams = [list(c) for c in cfg.check_cameras]
        v = len(cams)
        conds, targets = [], []
        for prompt in prompts:
            views = self._render(prompt, [list(cfg.cond_camera)] + cams)
            conds.append(views[:1].expand(v, -1, -1, -1))
            targets.append(views[1:])
        cond01 = torch.cat(conds).to(self.device)  # (P V, s, s, 3)
        target01 = torch.cat(targets).to(self.device)
        camera = torch.tensor(cams, dtype=torch.float32, device=self.device).repeat(len(prompts), 1)
        c = torch.tensor(cfg.cond_camera, dtype=torch.float32, device=self.device).expand_as(camera)
        pose = relative_pose(c[:, 0], c[:, 1], c[:, 2], camera[:, 0], camera[:, 1], camera[:, 2])
        g = torch.Generator().manual_seed(cfg.sample_seed)
        was_training = self.training
        self.eval()
        try:
            x = self.sample(cond01.permute(0, 3, 1, 2) * 2 - 1, pose, cfg.sample_steps, cfg.sample_guidance_scale, g)
        finally:
            self.train(was_training)
        sample01 = ((x + 1) / 2).permute(0, 2, 3, 1)
        self._save_grid(tag, cond01, target01, sample01, len(prompts), v)

        def figures(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
            """(N, s, s, 3) pairs -> per-image mean abs error (N,), silhouette IoU (N,)."""
            mae = (pred - true).abs().mean(dim=(1, 2, 3))
            fp = (pred - 1).abs().amax(-1) > cfg.fg_threshold
            ft = (true - 1).abs().amax(-1) > cfg.fg_threshold
            iou = (fp & ft).sum((1, 2)).float() / (fp | ft).sum((1, 2)).clamp(min=1).float()
            return mae, iou

        mae, iou = figures(sample01, target01)
        copy_mae, copy_iou = figures(cond01, target01)
        n_trained = len(cfg.trained_check_prompts) * v
        out: dict[str, float] = {}
        for split, rows in (("trained", slice(0, n_trained)), ("held_out", slice(n_trained, None))):
            out[f"{split}_mae"] = float(mae[rows].mean())
            out[f"{split}_iou"] = float(iou[rows].mean())
            out[f"{split}_copy_cond_mae"] = float(copy_mae[rows].mean())
            out[f"{split}_copy_cond_iou"] = float(copy_iou[rows].mean())
        print(f"[{tag}] view check: " + ", ".join(f"{k} {val:.3f}" for k, val in out.items()), flush=True)
        return out

    def _save_grid(self, tag: str, cond: Tensor, target: Tensor, sample: Tensor, n_prompts: int, v: int) -> None:
        """Rows: prompts; columns: cond | (true target, sample) per camera. Tensors (P V, s, s, 3) in [0, 1]."""
        from PIL import Image

        rows = []
        for p in range(n_prompts):
            tiles = [cond[p * v]]
            for j in range(v):
                tiles += [target[p * v + j], sample[p * v + j]]
            rows.append(torch.cat(tiles, dim=1))
        grid = (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        self.save_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(self.save_dir / f"{tag}-views.png")

    # ---- export -----------------------------------------------------------------------------
    def save_pretrained(self, folder: Path) -> None:
        parts = dict(self.nets.items())
        parts.update(scheduler=self.scheduler, feature_extractor=self.feature_extractor)
        dtype = torch.float16 if self.cfg.save_dtype == "float16" else torch.float32
        save_view_prior_folder(folder, parts, dtype=dtype)
