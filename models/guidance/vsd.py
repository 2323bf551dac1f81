"""Variational Score Distillation (ProlificDreamer, Wang et al. 2023), for any UNet prior of the project.

SDS pushes a render toward the prior's denoised estimate against the injected noise eps. VSD
replaces eps by the noise prediction of the *current renders'* distribution, learned on the fly by
a LoRA copy of the prior that is also told the camera (models/guidance/lora_copy.py). With the
same t ~ U[t_min, t_max] and eps ~ N(0, I) in both branches and z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps:

    eps_pre = eps_u + s (eps_c - eps_u)          pretrained prior, view-dependent prompt, CFG s = 7.5
                                                 (Perp-Neg applies here, models/guidance/cfg.py)
    eps_est = eps_0 + s_l (eps_cam - eps_0)      LoRA copy, view-independent prompt, camera c2w vs
                                                 zero camera, s_l = 1 (so eps_est = eps_cam)
    grad_z  = w(t) (eps_pre - eps_est),  w = 1 - abar_t           (ProlificDreamer eq. 9)

applied through the detached-target loss every rule shares (loss_vsd; dL/dz = grad_z / B). A
v-prediction output converts to eps by eps = sqrt(abar) v + sqrt(1 - abar) x_t.

The LoRA copy trains in the same step (loss_lora, ProlificDreamer eq. 10): on the detached render
z, a fresh t ~ U{0, ..., T-1} and eps, the camera zeroed with probability 0.1, the MSE of its
prediction against eps, or against v = sqrt(abar) eps - sqrt(1 - abar) z for a v-prediction model.
Its LoRA layers and camera embedding are the guidance's only trainable parameters
(`trainable_parameters`): the system gives them their own optimiser group and keeps them in
checkpoints, without the frozen base weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.config import ConfigError
from framework.value_checks import at_least, between, check_fields, one_of
from models.guidance.cfg import classifier_free_guidance, guided_noise
from models.guidance.lora_copy import (
    LORA_TARGET_MODULES,
    CameraEmbedding,
    add_lora,
    lora_pass,
    time_embedding_width,
    zero_cameras_with_probability,
)
from models.guidance.rule import WEIGHTINGS, DistillationRule, DistillationRuleConfig, detached_target_loss, sds_weight
from models.guidance.sds import sds_gradient
from models.priors.base import DiffusionPrior, diffuse, v_to_eps
from models.priors.hf_loading import MissingWeightsError, ModelSource
from models.priors.text_conditioned import TextConditionedPrior
from models.prompt_processors.text_condition import TextCondition

UNET_PRIORS = "stable-diffusion, deep-floyd-if, or the toy text-to-image prior (system/guidance=vsd-toy-unet)"


@dataclass
class VSDGuidanceConfig(DistillationRuleConfig):
    _target_: str = "models.guidance.vsd.VSDGuidance"
    guidance_scale: Any = 7.5
    """Schedule: CFG of the pretrained branch, eps_u + s (eps_c - eps_u) (ProlificDreamer's 7.5)."""
    weighting: str = "sds"
    """w(t): 'sds' = 1 - abar_t (ProlificDreamer), 'uniform', 'fantasia3d'."""
    lora_model_name_or_path: Optional[str] = None
    """None: the LoRA sits on the prior's own UNet (one model, less memory). Else a second model (hub id
    or diffusers folder with unet/ and scheduler/), e.g. stabilityai/stable-diffusion-2-1 (v-prediction)."""
    lora_rank: int = 4
    lora_target_modules: List[str] = field(default_factory=lambda: list(LORA_TARGET_MODULES))
    """Attention projections the LoRA adapts (every attention block, self and cross)."""
    guidance_scale_lora: float = 1.0
    """s_l of eps_est between camera and zero camera (ProlificDreamer: 1, the camera branch alone)."""
    camera_condition_dropout: float = 0.1
    """Probability of a zero camera in the LoRA loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, weighting=one_of(*WEIGHTINGS), lora_rank=at_least(1), camera_condition_dropout=between(0, 1))


class VSDGuidance(DistillationRule):
    """A text-conditioned UNet prior, its LoRA copy with a camera embedding, and the VSD rule.
    Returns loss_vsd, loss_lora and diagnostics."""

    loss_names = ("vsd", "lora")
    cfg: VSDGuidanceConfig

    def __init__(self, cfg: VSDGuidanceConfig, prior: DiffusionPrior | None = None):
        super().__init__(cfg, prior)
        if not isinstance(self.prior, TextConditionedPrior):
            raise ConfigError(
                f"system.guidance: VSD adapts the prior's UNet with LoRA; {type(self.prior).__name__} has no UNet to adapt. "
                f"Use a UNet prior: {UNET_PRIORS}"
            )
        self.lora_unet: nn.Module | None = None
        if cfg.lora_model_name_or_path is None:
            unet, self.lora_prediction_type = self.prior.unet, self.prior.prediction_type
            self.register_buffer("lora_alphas_cumprod", self.prior.alphas_cumprod.clone(), persistent=False)
        else:
            unet = self.lora_unet = self._load_lora_model(cfg)
        self.camera_embedding = CameraEmbedding(time_embedding_width(unet))
        self.lora_parameters = add_lora(unet, cfg.lora_rank, cfg.lora_target_modules)

    def _load_lora_model(self, cfg: VSDGuidanceConfig) -> nn.Module:
        """The second UNet and its schedule, through the same loading code as the priors (fast, clear
        error when the weights are missing)."""
        from diffusers import DDPMScheduler, UNet2DConditionModel

        prior = self.prior
        source = ModelSource(
            cfg.lora_model_name_or_path,
            what="VSD's LoRA model",
            config_key="system.guidance.lora_model_name_or_path",
            subfolders=["unet", "scheduler"],
            local_files_only=prior.cfg.local_files_only,
        )
        scheduler = source.load(DDPMScheduler, "scheduler")
        unet = source.load(UNet2DConditionModel, "unet", torch_dtype=prior.weights_dtype, variant=prior.cfg.variant)
        self.lora_prediction_type = scheduler.config.prediction_type
        if self.lora_prediction_type not in ("epsilon", "v_prediction"):
            raise MissingWeightsError(f"{source.name!r}: unsupported scheduler prediction_type {self.lora_prediction_type!r}")
        if scheduler.alphas_cumprod.shape != prior.alphas_cumprod.shape:
            raise ConfigError(
                f"system.guidance.lora_model_name_or_path={source.name}: its scheduler has "
                f"{scheduler.alphas_cumprod.shape[0]} steps, the prior's {prior.num_train_timesteps}; both branches share t"
            )
        self.register_buffer("lora_alphas_cumprod", scheduler.alphas_cumprod.detach().float().clone(), persistent=False)
        return prior._prepare_unet(unet, prior.cfg)

    @property
    def lora_model(self) -> nn.Module:
        return self.lora_unet if self.lora_unet is not None else self.prior.unet

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.lora_parameters
        yield from self.camera_embedding.parameters()

    # ---- the LoRA copy -----------------------------------------------------------------------
    def lora_output(self, x_t: Tensor, t: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        """The LoRA copy's raw prediction (eps or v, B, C, h, w) for cameras c2w (B, 16)."""
        with lora_pass(self.lora_model, self.camera_embedding):
            return self.prior.unet_output(self.lora_model, x_t, t, text, class_labels=cameras)

    def estimated_noise(self, x_t: Tensor, t: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        """eps_est = eps_0 + s_l (eps_cam - eps_0) (B, C, h, w); with s_l = 1 the camera pass alone."""
        scale = self.cfg.guidance_scale_lora
        b = x_t.shape[0]
        if scale == 1.0:
            out = self.lora_output(x_t, t, text, cameras)
        else:
            both = self.lora_output(
                torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, text]), torch.cat([cameras, torch.zeros_like(cameras)])
            )
            out = classifier_free_guidance(both[b:], both[:b], scale)  # (uncond = zero camera, cond = camera)
        if self.lora_prediction_type == "v_prediction":
            out = v_to_eps(out, x_t, self.lora_alphas_cumprod.to(t.device)[t])
        return out

    def lora_loss(self, z: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        """MSE of the LoRA copy on the detached renders z (B, C, h, w) at fresh t and noise."""
        t = torch.randint(0, self.lora_alphas_cumprod.shape[0], (z.shape[0],), device=z.device)
        noise = torch.randn_like(z)
        abar = self.lora_alphas_cumprod.to(z.device)[t]
        x_t = diffuse(z, abar, noise)
        cameras = zero_cameras_with_probability(cameras, self.cfg.camera_condition_dropout)
        prediction = self.lora_output(x_t, t, text, cameras)
        target = noise if self.lora_prediction_type == "epsilon" else lora_v_target(z, abar, noise)
        return F.mse_loss(prediction.float(), target.float())

    # ---- a step ------------------------------------------------------------------------------
    def forward(
        self,
        rgb: Tensor,
        condition: Any,
        batch: dict[str, Any],
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """rgb (B, H, W, 3) in [0, 1] -> {loss_vsd, loss_lora, grad_norm, t_mean}; reads batch['c2w'] (B, 4, 4).

        `t` (B,) and `noise` may be given (tests); otherwise they are drawn."""
        z = self.prior.encode(rgb)  # (B, C, h, w), differentiable
        b = z.shape[0]
        if t is None:
            t = self.sample_timesteps(b, z.device)
        if noise is None:
            noise = torch.randn_like(z)
        if "c2w" not in batch:
            raise ValueError("VSD's LoRA copy is told the camera: the batch needs 'c2w' (B, 4, 4)")
        cameras = batch["c2w"].to(z.device).reshape(b, 16).float()
        text = view_independent_text(condition, b)
        abar = self.alphas_cumprod_at(t)  # (B,)
        with torch.no_grad():
            z_t = diffuse(z, abar, noise)
            eps_pre = guided_noise(self.prior, z_t, t, condition, batch, self.guidance_scale)
            eps_est = self.estimated_noise(z_t, t, text, cameras)
            # SDS's gradient with the renders' own noise estimate in place of the injected noise
            grad = sds_gradient(eps_pre, eps_est, sds_weight(abar, self.cfg.weighting), self.grad_clip)
        return {
            "loss_vsd": detached_target_loss(z, grad),
            "loss_lora": self.lora_loss(z.detach(), text, cameras),
            "grad_norm": grad.norm(),
            "t_mean": t.float().mean(),
        }


def lora_v_target(z: Tensor, alphas_cumprod_t: Tensor, noise: Tensor) -> Tensor:
    """v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022), the v-prediction training target."""
    abar = alphas_cumprod_t.view(-1, 1, 1, 1)
    return abar.sqrt() * noise - (1.0 - abar).sqrt() * z


def view_independent_text(condition: Any, batch_size: int) -> Tensor:
    """The prompt as written (B, L, D), which the LoRA branch is conditioned on (its camera carries the view)."""
    if isinstance(condition, TextCondition):
        text = condition.text
    elif isinstance(condition, dict) and "text_embeddings" in condition:
        text = condition["text_embeddings"]
    else:
        raise ValueError("VSD needs a text condition (a text prompt processor for this prior)")
    return text.expand(batch_size, -1, -1) if text.shape[0] == 1 else text
