"""The toy world's exact view-conditioned prior: Zero-1-to-3's interface, computed in closed form.

Zero-1-to-3 models p(x | y, c): the image x of an object from camera c given one image y of it
from a reference camera c_y. In the toy world this distribution is known. Every image is a
render of one of a finite set of candidate scenes, so

    p(s | y)     = softmax_s( -||y - R_s(c_y)||^2 / (2 sigma^2) )        (uniform prior over candidates)
    p(x | y, c)  = sum_s p(s | y) p(x | s, c)

where R_s(c) is the render of scene s from camera c and sigma the pixel noise (rgb in [0, 1] at the
prior's resolution). p(x | s, c) is the exact-score prior's view model (exact_score.py): the k
exemplars of s whose cameras are nearest c, with equal weight, p(x | s, c) = (1/k) sum_i
delta(x - x_{s,i}). With the reference render R_s(c_y) added to each scene's pool of exemplars
(include_reference_view), the view model is exact at the reference camera. So the conditional
model is a mixture of mixtures with weights w_{s,i} = p(s | y) / k, and its DDPM posterior mean is
one weighted softmax over all of them (x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps):

    p(x_t | y, c)      = sum_{s,i} w_{s,i} N(x_t; sqrt(abar) x_{s,i}, (1 - abar) I)
    E[x_0 | x_t, y, c] = sum_{s,i} softmax_{s,i}( log w_{s,i} - ||x_t - sqrt(abar) x_{s,i}||^2 / (2 (1 - abar)) ) x_{s,i}
                       = sum_s r_s(x_t) x0_hat_s(x_t),  r_s proportional to p(s | y) p(x_t | s, c)

(posterior_mean with log_weights = log p(s | y) - log k). The second form says what it does: each
scene's own posterior mean, weighted by the scene's posterior re-weighted by how well it explains
x_t. At high noise r_s -> p(s | y); at low noise the exemplar nearest x_t wins. eps_hat follows by
Tweedie, eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar).

With target_views = "render" the view model is the render itself, p(x | s, c) = delta(x - R_s(c)):
each posterior scene is traced at each target camera (one trace per geometry, candidate_views.py),
k = 1 and w_s = p(s | y). That is the toy world's exact conditional, with no view blur from the
nearest bank views, at the price of a trace per view and geometry at every call (tenths of a second
each on a CPU, against milliseconds for "bank").

The unconditional model (classifier-free guidance's eps_uncond) ignores y: the exact-score prior's
unconditional model, the union of the camera-nearest exemplars of every single-shape candidate
(with "render": their renders at the target camera, uniformly weighted).

The likelihood needs every candidate seen from the reference camera: 930 renders by default, made
as 30 traces (one per geometry, coloured after: candidate_views.py), about 12 s at 64^2 on two
cores the first time a camera is used, then read from the disk cache.

Reference cameras. Toy images have a known vertical fov, which Zero-1-to-3's interface does not
pass: set_condition_image takes an optional fovy_deg, defaulting to `reference_fovy_deg` (40 deg,
the toy turntable's fov). Target cameras come from the batch (elevation, azimuth in degrees,
distance, fovy in radians; without fovy the reference fov is used), as for Zero123Prior.

Exemplar data (banks, candidate renders, the posterior) live in plain dicts and disk caches, never
in buffers: they are data, not weights, and stay out of checkpoints.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras import orbit_c2w
from framework.value_checks import at_least, between, check_fields, greater_than, inside, one_of
from models.priors.base import DiffusionPrior

from .candidate_views import render_candidates, render_views
from .exact_score import EXEMPLAR_PRIOR_RULES, ToyExactScorePrior, ToyExactScorePriorConfig, posterior_mean
from .exemplars import DEFAULT_SIGMA_DIR_DEG, DEFAULT_SIGMA_SCALE, _log_apparent_size, camera_distance
from .scenes import composite_prompts, parse_prompt, single_shape_prompts

log = logging.getLogger(__name__)


@dataclass
class ToyExactViewPriorConfig:
    _target_: str = "models.priors.toy.exact_view_prior.ToyExactViewPrior"
    resolution: int = 64
    candidate_prompts: Optional[List[str]] = None  # None: every toy prompt, 30 single shapes + 900 composites
    pixel_sigma: float = 0.1  # per value of rgb in [0, 1] at `resolution`: the likelihood's noise
    max_scenes: int = 8  # at most this many scenes carry the posterior (each holds a bank in memory)
    min_posterior: float = 1e-3  # scenes below this posterior mass are dropped (then renormalised)
    reference_fovy_deg: float = 40.0  # the reference camera's fov when set_condition_image gets none
    target_views: str = "bank"  # or "render": trace the posterior's scenes at the target camera itself
    include_reference_view: bool = True  # "bank": add R_s(c_y) to each scene's exemplars: exact at the reference camera
    n_exemplars: int = 1024  # views per posterior scene's bank
    k_nearest: int = 16  # per scene; 0: all of its exemplars
    uncond_prompts: Optional[List[str]] = None  # None: the single-shape candidates
    n_uncond_exemplars: int = 64
    k_nearest_uncond: Optional[int] = 4  # per unconditional scene; None: k_nearest
    sigma_dir_deg: float = DEFAULT_SIGMA_DIR_DEG
    sigma_scale: float = DEFAULT_SIGMA_SCALE
    camera_angle: str = "rotation"  # or "direction" (exemplars.py)
    # exemplar cameras: the toy camera preset's ranges (configs/data/random-camera-toy.yaml)
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 60.0])
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    distance_range: List[float] = field(default_factory=lambda: [1.4, 1.8])
    fovy_range: List[float] = field(default_factory=lambda: [35.0, 45.0])
    supersample: int = 2
    seed: int = 0
    cache_dir: Optional[str] = None  # None: $TOY3D_CACHE or ~/.cache/toy3d/exemplars
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        check_fields(
            self,
            **EXEMPLAR_PRIOR_RULES,
            pixel_sigma=greater_than(0),
            max_scenes=at_least(1),
            min_posterior=between(0, 1),
            reference_fovy_deg=inside(0, 180),
            target_views=one_of("bank", "render"),
        )


def _unique(prompts: List[str]) -> List[str]:
    """Canonical spellings, first occurrence kept (parsing also rejects a typo early)."""
    return list(dict.fromkeys(parse_prompt(p).prompt for p in prompts))


def _finite(exemplars: Tensor) -> Tensor:
    """Exemplars (..., D) with NaN pixels set to 0 (mid grey). render_scene shades a ray that stops
    exactly on a cone's side NaN (candidate_views.finite_normals); a few bank views hold one such
    pixel, and one NaN exemplar would make the whole softmax, hence x0_hat, NaN."""
    return torch.nan_to_num(exemplars, nan=0.0)


class ToyExactViewPrior(DiffusionPrior):
    """Exact p(x | reference view, target camera) over the toy world. Pixel space x = 2 rgb - 1 at r^2."""

    def __init__(self, cfg: ToyExactViewPriorConfig, **runtime_objects: Any) -> None:
        super().__init__()
        self.cfg = cfg
        all_prompts = single_shape_prompts() + composite_prompts()
        self.candidates = _unique(list(cfg.candidate_prompts) if cfg.candidate_prompts is not None else all_prompts)
        uncond = cfg.uncond_prompts
        if uncond is None:
            uncond = [p for p in self.candidates if len(parse_prompt(p).primitives) == 1]
        self.uncond_prompts = uncond = _unique(list(uncond))
        if not self.candidates or not uncond:
            raise ValueError(
                f"the exact view prior needs candidate scenes and unconditional scenes; got {len(self.candidates)} "
                f"candidates and {len(uncond)} unconditional prompts (by default the single-shape candidates)"
            )
        # per-scene exemplar banks and the unconditional model are the exact-score prior's own
        self.scenes = ToyExactScorePrior(ToyExactScorePriorConfig(
            prompt="???", resolution=cfg.resolution, n_exemplars=cfg.n_exemplars, k_nearest=cfg.k_nearest,
            k_nearest_uncond=cfg.k_nearest_uncond, sigma_dir_deg=cfg.sigma_dir_deg, sigma_scale=cfg.sigma_scale,
            camera_angle=cfg.camera_angle, elevation_range=list(cfg.elevation_range),
            azimuth_range=list(cfg.azimuth_range), distance_range=list(cfg.distance_range),
            fovy_range=list(cfg.fovy_range), supersample=cfg.supersample, seed=cfg.seed, cache_dir=cfg.cache_dir,
            uncond_prompts=uncond, n_uncond_exemplars=cfg.n_uncond_exemplars,
            num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
            beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        ))  # fmt: skip
        self.set_noise_schedule(self.scenes.alphas_cumprod)
        self.cond: Optional[dict[str, Any]] = None

    # --- rendering <-> prior space -----------------------------------------------------------

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1], differentiable -> x (B, 3, r, r) in [-1, 1]."""
        return self.scenes.encode(rgb)

    def decode(self, x: Tensor) -> Tensor:
        """x (B, 3, r, r) -> rgb (B, r, r, 3) in [0, 1]."""
        return self.scenes.decode(x)

    # --- the condition: the posterior over candidate scenes ----------------------------------

    def _reference(self, rgb: Tensor) -> Tensor:
        """rgb (1, H, H, 3) in [0, 1] -> (1, r, r, 3) on the CPU, float32."""
        if not isinstance(rgb, Tensor) or rgb.ndim != 4 or rgb.shape[0] != 1 or rgb.shape[-1] != 3 or rgb.shape[1] != rgb.shape[2]:
            shape = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
            raise ValueError(
                f"the condition image must be a square (1, H, H, 3) rgb tensor in [0, 1] over white, got {shape} "
                "(composite an RGBA image over white first; toy cameras are square)"
            )
        x = rgb.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise ValueError("the condition image has NaN or infinite values")
        r = self.cfg.resolution
        x = x.clamp(0.0, 1.0).permute(0, 3, 1, 2)
        if x.shape[-1] != r:
            # downsampling by area is the box filter of the candidates' supersampling (exact for H = s r)
            if x.shape[-1] > r:
                x = F.interpolate(x, size=(r, r), mode="area")
            else:
                x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return x.permute(0, 2, 3, 1).contiguous()

    @torch.no_grad()
    def make_condition(
        self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float, fovy_deg: float | None = None
    ) -> dict[str, Any]:
        """rgb (1, H, H, 3) in [0, 1] over white, seen from an orbit camera -> the posterior over scenes.

        -> {"elevation", "azimuth", "distance", "fovy" (degrees / world units), "prompts" (S kept scenes,
        most probable first), "probs" (S,) renormalised posterior, "log_likelihood" (S,), "views"
        (S, r, r, 3) their renders from the reference camera, "reference" (1, r, r, 3), "dropped_mass"}.
        Renders every candidate from the reference camera (disk-cached) and the kept scenes' banks.
        """
        cfg = self.cfg
        ref = self._reference(rgb)
        fovy_deg = cfg.reference_fovy_deg if fovy_deg is None else float(fovy_deg)
        camera = (float(elevation_deg), float(azimuth_deg), float(distance), fovy_deg)
        views = render_candidates(self.candidates, *camera, cfg.resolution, cfg.supersample, cfg.cache_dir)  # (N, r, r, 3)
        sse = (views - ref).square().flatten(1).sum(-1)  # (N,)
        log_lik = -sse / (2.0 * cfg.pixel_sigma**2)  # log N(y; R_s(c_y), sigma^2 I) up to a constant
        post = torch.softmax(log_lik, dim=0)  # uniform prior over the candidates
        order = post.argsort(descending=True)[: cfg.max_scenes]
        keep = order[(post[order] >= cfg.min_posterior) | (torch.arange(order.numel()) == 0)]
        probs = post[keep] / post[keep].sum()
        prompts = [self.candidates[i] for i in keep.tolist()]
        rms = (sse / ref.numel()).sqrt()
        if rms[order[0]] > cfg.pixel_sigma:  # not even the best candidate is within the pixel noise
            best = ", ".join(f"{self.candidates[i]!r} (log-likelihood {log_lik[i]:.1f}, rms {rms[i]:.3f})" for i in order[:5].tolist())
            log.warning(
                "no toy scene explains the reference image within pixel_sigma=%.3g (rms residual per value); "
                "the posterior is the softmax of the log-likelihoods anyway. Best candidates: %s", cfg.pixel_sigma, best,
            )  # fmt: skip
        log.info("reference view posterior: %s", ", ".join(f"{p!r} {q:.3f}" for p, q in zip(prompts, probs.tolist())))
        if cfg.target_views == "bank":  # render (or load) the kept scenes' banks now, not at the first guidance step
            for p in prompts:
                self.scenes.bank(p)
        return {
            "elevation": camera[0], "azimuth": camera[1], "distance": camera[2], "fovy": camera[3],
            "prompts": prompts, "probs": probs, "log_likelihood": log_lik[keep], "views": views[keep],
            "reference": ref, "dropped_mass": float(1.0 - post[keep].sum()),
        }  # fmt: skip

    def set_condition_image(
        self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float, fovy_deg: float | None = None
    ) -> None:
        """Store the posterior given rgb (1, H, H, 3) in [0, 1] from its camera (degrees, world units;
        fovy_deg None: reference_fovy_deg)."""
        self.cond = self.make_condition(rgb, elevation_deg, azimuth_deg, distance, fovy_deg)

    def _condition(self, condition: Any) -> dict[str, Any]:
        """None (the stored one), make_condition's dict, or {"rgb", "elevation", "azimuth", "distance"[, "fovy"]}."""
        if condition is None:
            condition = self.cond
        if condition is None:
            raise ValueError("ToyExactViewPrior has no condition image: call set_condition_image(rgb, elevation, azimuth, distance)")
        if not isinstance(condition, dict):
            raise TypeError(f"the exact view prior's condition is None or a dict, got {type(condition).__name__}")
        if "prompts" not in condition:
            if "rgb" not in condition:
                raise ValueError("condition must hold 'rgb' (1, H, H, 3) and its camera, or make_condition's output")
            pose = condition.get("T")
            condition = self.make_condition(condition["rgb"], condition["elevation"], condition["azimuth"],
                                            condition["distance"], condition.get("fovy"))  # fmt: skip
            if pose is not None:
                condition["T"] = pose
        return condition

    # --- target cameras and exemplars --------------------------------------------------------

    @staticmethod
    def _target_cameras(cond: dict[str, Any], batch: dict[str, Any], bsz: int) -> dict[str, Tensor]:
        """-> {"elevation", "azimuth" (deg), "distance", "fovy" (rad)}, each (B,) on the CPU.

        From the batch's cameras, or from a relative pose T (B, 4) in the condition (Zero123Prior's
        override: T = [radians(cond elev - target elev), sin(d az), cos(d az), target dist - cond dist]).
        """
        def rows(value: Any) -> Tensor:
            v = torch.as_tensor(value, dtype=torch.float32).detach().cpu().reshape(-1)
            if v.shape[0] not in (1, bsz):
                raise ValueError(f"camera batch has {v.shape[0]} views but x_t has {bsz}")
            return v.expand(bsz)

        pose = cond.get("T")
        if pose is not None:
            pose = torch.as_tensor(pose, dtype=torch.float32).detach().cpu().reshape(-1, 4).expand(bsz, 4)
            elevation = cond["elevation"] - torch.rad2deg(pose[:, 0])
            azimuth = cond["azimuth"] + torch.rad2deg(torch.atan2(pose[:, 1], pose[:, 2]))
            distance = cond["distance"] + pose[:, 3]
        else:
            missing = [k for k in ("elevation", "azimuth", "distance") if k not in batch]
            if missing:
                raise ValueError(f"ToyExactViewPrior needs the target cameras batch['elevation'/'azimuth'/'distance']; missing {missing}")
            elevation, azimuth, distance = (rows(batch[k]) for k in ("elevation", "azimuth", "distance"))
        fovy = rows(batch["fovy"]) if "fovy" in batch else torch.full((bsz,), math.radians(cond["fovy"]))
        return {"elevation": elevation, "azimuth": azimuth, "distance": distance, "fovy": fovy}

    def _cond_exemplars(self, cond: dict[str, Any], cams: dict[str, Tensor], bsz: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The conditional mixture's exemplars (B, S k, D) and their log weights log p(s | y) - log k (B, S k).

        Each scene's pool is its bank (n views) plus, with include_reference_view, its render from the
        reference camera (index n). All banks share their cameras (same seed, ranges and n), so one
        camera top-k over the pool serves every scene.
        """
        cfg = self.cfg
        banks = [self.scenes.bank(p) for p in cond["prompts"]]
        n = banks[0].n
        rot, log_size = banks[0].rotations, banks[0].log_size  # (n, 3, 3), (n,)
        if cfg.include_reference_view:
            e, a, d, f = (torch.tensor([float(cond[k])]) for k in ("elevation", "azimuth", "distance", "fovy"))
            rot = torch.cat([rot, orbit_c2w(e, a, d)[:, :3, :3]])
            log_size = torch.cat([log_size, _log_apparent_size(d, torch.deg2rad(f))])
        pool = rot.shape[0]
        k = cfg.k_nearest
        if k <= 0 or k >= pool:
            idx = torch.arange(pool).expand(bsz, pool)
        else:
            dist = camera_distance(cams["elevation"], cams["azimuth"], cams["distance"], cams["fovy"], rot, log_size,
                                   cfg.sigma_dir_deg, cfg.sigma_scale, cfg.camera_angle)  # fmt: skip
            idx = dist.topk(k, dim=-1, largest=False).indices  # (B, k)
        idx = idx.to(device)
        is_ref = (idx == n)[..., None]  # (B, k, 1): the reference render, not a bank view
        per_scene = []
        for s, bank in enumerate(banks):
            ex = self.scenes.bank_flat(bank, device)[idx.clamp(max=n - 1)]  # (B, k, D)
            if cfg.include_reference_view:
                ref_view = (cond["views"][s].permute(2, 0, 1).reshape(-1) * 2.0 - 1.0).to(device)  # (D,)
                ex = torch.where(is_ref, ref_view, ex)
            per_scene.append(ex)
        ex = _finite(torch.stack(per_scene, dim=1).reshape(bsz, len(banks) * idx.shape[1], -1))  # (B, S k, D)
        # w_{s,i} = p(s | y) / k (module docstring): the mixture of the scenes' view mixtures
        log_w = cond["probs"].log()[:, None] - math.log(idx.shape[1])  # (S, 1)
        log_w = log_w.expand(-1, idx.shape[1]).reshape(1, -1).expand(bsz, -1).to(device)
        return ex, log_w

    def _rendered_exemplars(self, prompts: List[str], cams: dict[str, Tensor], device: torch.device) -> Tensor:
        """Each prompt's scene rendered at each target camera, in prior space. -> (B, S, D)"""
        c2w = orbit_c2w(cams["elevation"], cams["azimuth"], cams["distance"])
        views = render_views(prompts, c2w, cams["fovy"], self.cfg.resolution, self.cfg.supersample)  # (B, S, r, r, 3)
        return (views.permute(0, 1, 4, 2, 3).flatten(2) * 2.0 - 1.0).to(device)

    # --- the denoiser ------------------------------------------------------------------------

    def predict_x0(
        self,
        x_t: Tensor,  # (B, 3, r, r)
        t: Tensor,  # (B,) long
        condition: Any,  # None (the stored posterior) or a dict (_condition)
        batch: dict[str, Any],  # target cameras
        uncond: bool = False,
    ) -> Tensor:
        """The exact posterior mean x0_hat (B, 3, r, r) of the conditional (or unconditional) model.

        The unconditional model needs no condition image: without one, target cameras lacking fovy
        get reference_fovy_deg."""
        bsz = x_t.shape[0]
        abar = self.alphas_cumprod.to(x_t.device)[t.to(x_t.device).long()].float()
        x = x_t.reshape(bsz, -1).float()
        if uncond and condition is None and self.cond is None:
            cond: dict[str, Any] = {"fovy": self.cfg.reference_fovy_deg}
        else:
            cond = self._condition(condition)
        cams = self._target_cameras(cond, batch, bsz)
        if self.cfg.target_views == "render":
            ex = self._rendered_exemplars(self.uncond_prompts if uncond else cond["prompts"], cams, x_t.device)
            log_w = None if uncond else cond["probs"].log().to(x_t.device)  # w_s = p(s | y), k = 1
            x0 = posterior_mean(x, ex, abar, log_w)
        elif uncond:
            x0 = posterior_mean(x, _finite(self.scenes.exemplars_for(None, cams, bsz, x_t.device, uncond=True)), abar)
        else:
            ex, log_w = self._cond_exemplars(cond, cams, bsz, x_t.device)
            x0 = posterior_mean(x, ex, abar, log_w)
        return x0.view_as(x_t).to(x_t.dtype)

    @torch.no_grad()
    def predict_noise(
        self,
        x_t: Tensor,  # (B, 3, r, r)
        t: Tensor,  # (B,) long, in [0, T)
        condition: Any,  # None (the view given to set_condition_image) or a dict (_condition)
        batch: dict[str, Any],  # target cameras: "elevation", "azimuth" (B,) degrees, "distance" (B,)[, "fovy" (B,) rad]
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> (eps_cond (B, 3, r, r), eps_uncond (B, 3, r, r) or None), by Tweedie from the exact x0_hat.

        `condition` as Zero123Prior's: None uses set_condition_image's; a dict {"rgb" (1, H, H, 3),
        "elevation", "azimuth", "distance"[, "fovy" deg]} (its posterior is computed on every call: pass
        make_condition's output instead to reuse it) overrides it; an optional "T" (B, 4) relative pose
        gives the target cameras instead of the batch's.
        """
        condition = self._condition(condition)  # once for both branches
        eps_c = self.scenes.eps_from_x0(x_t, t, self.predict_x0(x_t, t, condition, batch))
        if not need_uncond:
            return eps_c, None
        eps_u = self.scenes.eps_from_x0(x_t, t, self.predict_x0(x_t, t, condition, batch, uncond=True))
        return eps_c, eps_u
