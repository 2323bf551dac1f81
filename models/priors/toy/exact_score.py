"""The toy world's exact-score prior: a closed-form denoiser over rendered exemplar images.

If the data distribution is the empirical distribution of exemplars {x_i}, the DDPM forward
process x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps makes p(x_t) a Gaussian mixture, whose
posterior mean and noise prediction are exact (REFERENCE.md, SDS section, "Exact-score prior"):

    x0_hat = sum_i softmax_i( -||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar)) ) x_i
    eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar)

so SDS with w = 1 - abar pulls a render x towards x0_hat:  (1 - abar)(eps_hat - eps) =
sqrt(abar (1 - abar)) (x - x0_hat). No network, no weights: the prior is exact by construction,
which is what makes it the project's offline default and its ground-truth check.

Conditioning. The conditional model of a prompt uses exemplars of its scene only; the view is
conditioned by keeping the k exemplars whose cameras are nearest the batch's camera
(exemplars.py documents the metric). The unconditional model is the union of the nearest
exemplars of a set of scenes (by default the 30 single shapes). Banks are rendered lazily on
first use, cached on disk and kept in plain dicts (never buffers: they are data, not weights,
and must stay out of checkpoints).

Space: pixels at `resolution`^2 in [-1, 1] (like DeepFloyd IF's stage I), x = 2 rgb - 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor

from framework.progress import progress
from framework.value_checks import (
    at_least,
    between,
    check_fields,
    greater_than,
    increasing_pair,
    inside,
    number,
    one_of,
    optional,
)
from models.priors.base import DiffusionPrior

from .exemplars import DEFAULT_SIGMA_DIR_DEG, DEFAULT_SIGMA_SCALE, ExemplarBank, camera_distance
from .scenes import ToyScene, parse_prompt, single_shape_prompts


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid")
"""diffusers' DDPMScheduler's beta_schedule values."""

EXEMPLAR_PRIOR_RULES = dict(
    resolution=at_least(1),
    n_exemplars=at_least(1),
    k_nearest=at_least(0),
    k_nearest_uncond=optional(at_least(0)),
    n_uncond_exemplars=at_least(1),
    sigma_dir_deg=greater_than(0),
    sigma_scale=greater_than(0),
    camera_angle=one_of("rotation", "direction"),
    elevation_range=increasing_pair(between(-90, 90)),
    azimuth_range=increasing_pair(number()),
    distance_range=increasing_pair(greater_than(0)),
    fovy_range=increasing_pair(inside(0, 180)),
    supersample=at_least(1),
    num_train_timesteps=at_least(1),
    beta_schedule=one_of(*BETA_SCHEDULES),
    beta_start=inside(0, 1),
    beta_end=inside(0, 1),
)
"""The rules of the fields the exact-score prior and the exact view prior share."""


@dataclass
class ToyExactScorePriorConfig:
    _target_: str = "models.priors.toy.exact_score.ToyExactScorePrior"
    prompt: str = "???"  # parsed at construction so a bad prompt fails early; the condition wins
    resolution: int = 64
    n_exemplars: int = 1024
    k_nearest: int = 16  # 0: all exemplars, not conditioned on the camera
    # per unconditional scene (their banks are n_uncond_exemplars small, so fewer neighbours span
    # about the same range of views as k_nearest of n_exemplars); None: same as k_nearest
    k_nearest_uncond: Optional[int] = 4
    sigma_dir_deg: float = DEFAULT_SIGMA_DIR_DEG
    sigma_scale: float = DEFAULT_SIGMA_SCALE
    camera_angle: str = "rotation"  # or "direction" (exemplars.py explains the difference)
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 90.0])
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    distance_range: List[float] = field(default_factory=lambda: [1.0, 1.5])
    fovy_range: List[float] = field(default_factory=lambda: [40.0, 70.0])
    supersample: int = 2
    seed: int = 0
    cache_dir: Optional[str] = None  # None: $TOY3D_CACHE or ~/.cache/toy3d/exemplars
    uncond_prompts: List[str] = field(default_factory=single_shape_prompts)
    n_uncond_exemplars: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        check_fields(self, **EXEMPLAR_PRIOR_RULES)


def posterior_mean(
    x_t: Tensor,  # (B, D) flattened noisy images
    exemplars: Tensor,  # (B, K, D) per-sample exemplars, or (K, D) shared by the batch
    abar: Tensor,  # (B,)
    log_weights: Tensor | None = None,  # (B, K) or (K,) log prior weights w_i (up to a constant); None: uniform
) -> Tensor:
    """x0_hat = E[x_0 | x_t] under the empirical exemplar distribution sum_i w_i delta(x_0 - x_i). -> (B, D)

    Squared distances are computed directly (not by the |a|^2 - 2ab + |b|^2 expansion, which
    cancels catastrophically as abar -> 1, exactly where the softmax is sharpest).
    """
    sa = abar.sqrt()[:, None, None]
    if log_weights is not None and log_weights.dim() == 1:
        log_weights = log_weights[None].expand(x_t.shape[0], -1)
    if exemplars.dim() == 2:  # shared: loop over the batch to keep memory at K x D
        return torch.cat([
            posterior_mean(x_t[b : b + 1], exemplars[None], abar[b : b + 1], None if log_weights is None else log_weights[b : b + 1])
            for b in range(x_t.shape[0])
        ])  # fmt: skip
    # p(x_t | x_0 = x_i) = N(sqrt(abar) x_i, (1 - abar) I) and prior w_i over i (uniform unless
    # given), so the posterior over i is softmax_i(log w_i - ||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar)))
    # (REFERENCE.md, with log w_i = const)
    d2 = (x_t[:, None, :] - sa * exemplars).square().sum(-1)  # (B, K)
    logits = -d2 / (2.0 * (1.0 - abar)[:, None])
    if log_weights is not None:
        logits = logits + log_weights.to(logits)
    weights = torch.softmax(logits, dim=-1)  # (B, K)
    return torch.einsum("bk,bkd->bd", weights, exemplars)


class ToyExactScorePrior(DiffusionPrior):
    def __init__(self, cfg: ToyExactScorePriorConfig, **runtime_objects: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.scene = parse_prompt(cfg.prompt) if cfg.prompt not in (None, "???") else None
        for p in cfg.uncond_prompts:
            parse_prompt(p)  # fail early on a typo in the config
        scheduler = DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
        )
        self.set_noise_schedule(scheduler.alphas_cumprod)
        self._banks: dict[tuple[str, int], ExemplarBank] = {}  # (prompt, n) -> bank, CPU
        self._flat: dict[tuple[str, int, str], Tensor] = {}  # (prompt, n, device) -> (N, D) in prior space

    # --- rendering <-> prior space -----------------------------------------------------------

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1], differentiable -> x (B, 3, r, r) in [-1, 1]."""
        x = rgb.permute(0, 3, 1, 2)
        r = self.cfg.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def decode(self, x: Tensor) -> Tensor:
        """x (B, 3, r, r) -> rgb (B, r, r, 3) in [0, 1]."""
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    # --- exemplar banks ----------------------------------------------------------------------

    def bank(self, prompt: str, n: int | None = None, show_progress: bool = True) -> ExemplarBank:
        """The (lazily rendered, disk-cached) exemplar bank of one scene prompt; a bar while it renders."""
        n = self.cfg.n_exemplars if n is None else int(n)
        key = (parse_prompt(prompt).prompt, n)
        if key not in self._banks:
            c = self.cfg
            self._banks[key] = ExemplarBank(
                key[0], n, c.resolution, c.resolution,
                elevation_range=c.elevation_range, azimuth_range=c.azimuth_range,
                distance_range=c.distance_range, fovy_range=c.fovy_range,
                seed=c.seed, supersample=c.supersample, cache_dir=c.cache_dir,
                sigma_dir_deg=c.sigma_dir_deg, sigma_scale=c.sigma_scale, camera_angle=c.camera_angle,
                show_progress=show_progress,
            )  # fmt: skip
        return self._banks[key]

    def bank_flat(self, bank: ExemplarBank, device: torch.device) -> Tensor:
        """Bank images in prior space, flattened and on `device`. -> (N, 3 r r)"""
        key = (bank.scene.prompt, bank.n, str(device))
        if key not in self._flat:
            x = bank.images.permute(0, 3, 1, 2) * 2.0 - 1.0
            self._flat[key] = x.reshape(bank.n, -1).to(device)
        return self._flat[key]

    def _scene_of(self, condition: Any) -> ToyScene:
        if isinstance(condition, ToyScene):
            return condition
        scene = getattr(condition, "scene", None)
        if isinstance(scene, ToyScene):
            return scene
        if isinstance(condition, str):
            return parse_prompt(condition)
        if condition is None and self.scene is not None:
            return self.scene
        raise TypeError(f"the toy exact-score prior needs a ToyCondition, ToyScene or prompt, got {condition!r}")

    @staticmethod
    def _cameras(batch: dict[str, Any], bsz: int, k: int) -> list[Tensor]:
        """elevation, azimuth (deg), distance, fovy (rad) from the camera batch, each (B,) on CPU."""
        keys = ("elevation", "azimuth", "distance", "fovy")
        missing = [key for key in keys if key not in batch]
        if missing:
            raise KeyError(f"camera-nearest exemplars (k_nearest={k}) need batch keys {missing}; set k_nearest=0 to ignore the camera")
        cams = [torch.as_tensor(batch[key]).reshape(-1).float().cpu() for key in keys]
        if cams[0].shape[0] == 1 and bsz > 1:
            cams = [c.expand(bsz) for c in cams]
        if cams[0].shape[0] != bsz:
            raise ValueError(f"camera batch has {cams[0].shape[0]} views but x_t has {bsz}")
        return cams

    def _exemplars(self, bank: ExemplarBank, k: int, batch: dict[str, Any], bsz: int, device: torch.device) -> Tensor:
        """The k camera-nearest exemplars per sample (B, k, D), or all of them (N, D) when k == 0."""
        flat = self.bank_flat(bank, device)
        if k <= 0 or k >= bank.n:
            return flat
        cams = self._cameras(batch, bsz, k)
        idx = bank.nearest(*cams, k=k).to(device)  # (B, k)
        return flat[idx]

    def uncond_banks(self) -> list[ExemplarBank]:
        """The unconditional scenes' banks, under one bar while any of them renders (shown after a second,
        so a warm cache prints nothing)."""
        cfg = self.cfg
        prompts = cfg.uncond_prompts
        if all((parse_prompt(p).prompt, cfg.n_uncond_exemplars) in self._banks for p in prompts):
            return [self.bank(p, cfg.n_uncond_exemplars) for p in prompts]
        what = "rendering the exemplar banks of the unconditional scenes"
        banks = []
        with progress(what, len(prompts), "scenes", delay=1.0) as bar:
            for p in prompts:
                banks.append(self.bank(p, cfg.n_uncond_exemplars, show_progress=False))
                bar.update()
        return banks

    def _uncond_exemplars(self, batch: dict[str, Any], bsz: int, device: torch.device) -> Tensor:
        """Union over the unconditional scenes of each one's k camera-nearest exemplars.

        All unconditional banks are drawn with the same seed, ranges and n, so they share their
        cameras: one top-k serves every scene. -> (B, S k, D), or (S n, D) when k == 0.
        """
        cfg = self.cfg
        n = cfg.n_uncond_exemplars
        banks = self.uncond_banks()
        key = ("\n".join(cfg.uncond_prompts), n, str(device))
        if key not in self._flat:
            self._flat[key] = torch.cat([self.bank_flat(b, device) for b in banks])  # (S n, D)
        flat = self._flat[key]
        k = cfg.k_nearest if cfg.k_nearest_uncond is None else cfg.k_nearest_uncond
        if k <= 0 or k >= n:
            return flat
        cams = self._cameras(batch, bsz, k)
        d = camera_distance(
            *cams, banks[0].rotations, banks[0].log_size, cfg.sigma_dir_deg, cfg.sigma_scale, cfg.camera_angle
        )  # (B, n)
        idx = d.topk(k, dim=-1, largest=False).indices  # (B, k)
        offsets = torch.arange(len(banks))[:, None] * n  # (S, 1)
        idx = (idx[:, None, :] + offsets[None]).reshape(bsz, -1).to(device)  # (B, S k)
        return flat[idx]

    def exemplars_for(self, condition: Any, batch: dict[str, Any], bsz: int, device: torch.device, uncond: bool = False) -> Tensor:
        """The exemplars the conditional (or unconditional) model mixes over: (B, K, D) or (K, D)."""
        if uncond:
            return self._uncond_exemplars(batch, bsz, device)
        return self._exemplars(self.bank(self._scene_of(condition).prompt), self.cfg.k_nearest, batch, bsz, device)

    # --- the denoiser ------------------------------------------------------------------------

    def predict_x0(
        self,
        x_t: Tensor,  # (B, 3, r, r)
        t: Tensor,  # (B,) long
        condition: Any,
        batch: dict[str, Any],
        uncond: bool = False,
    ) -> Tensor:
        """The exact posterior mean x0_hat (B, 3, r, r) (for tests and visualising targets)."""
        bsz = x_t.shape[0]
        abar = self.alphas_cumprod.to(x_t.device)[t.to(x_t.device).long()].float()
        ex = self.exemplars_for(condition, batch, bsz, x_t.device, uncond=uncond)
        x0 = posterior_mean(x_t.reshape(bsz, -1).float(), ex, abar)
        return x0.view_as(x_t).to(x_t.dtype)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """x_t (B, 3, r, r), t (B,), x0_hat (B, 3, r, r) -> eps_hat (B, 3, r, r)."""
        # Tweedie: E[eps | x_t] = (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar)  (REFERENCE.md)
        abar = self.alphas_cumprod.to(x_t.device)[t.to(x_t.device).long()].float().view(-1, 1, 1, 1)
        return ((x_t.float() - abar.sqrt() * x0.float()) / (1.0 - abar).sqrt()).to(x_t.dtype)

    @torch.no_grad()
    def predict_noise(
        self,
        x_t: Tensor,  # (B, 3, r, r)
        t: Tensor,  # (B,) long, in [0, T)
        condition: Any,  # ToyCondition (models/prompt_processors/toy.py), ToyScene or prompt
        batch: dict[str, Any],  # camera batch: elevation, azimuth (deg), distance, fovy (rad)
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> eps_cond (B, 3, r, r), eps_uncond (B, 3, r, r) or None."""
        eps_c = self.eps_from_x0(x_t, t, self.predict_x0(x_t, t, condition, batch))
        if not need_uncond:
            return eps_c, None
        eps_u = self.eps_from_x0(x_t, t, self.predict_x0(x_t, t, condition, batch, uncond=True))
        return eps_c, eps_u
