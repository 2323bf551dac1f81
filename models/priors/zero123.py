"""Zero-1-to-3 as a `DiffusionPrior`: a frozen view-conditioned denoiser, eps(x_t, t | cond view, T).

Zero-1-to-3 (Liu et al. 2023) conditions the UNet on the reference (cond) view twice:
  - channel concatenation: UNet input = [x_t, c_concat], c_concat = the cond view in the prior's space
    (latent space: vae.encode(2 rgb - 1).latent_dist.mode(), unscaled, as the real model; pixel space:
    2 resize(rgb) - 1);
  - one cross-attention token = cc_projection(concat(CLIP image embedding of the cond view, T)), with T the
    4-vector of the camera change (`relative_pose` below; two conventions, `pose_convention`):
      zero123         T = [radians(delta polar), sin(delta azimuth), cos(delta azimuth), delta distance]
      stable-zero123  T = [radians(delta polar), sin(delta azimuth), cos(delta azimuth), radians(cond polar)]
    (deltas are target minus cond; polar = 90 - elevation, so delta polar = cond elevation - target elevation).
The unconditional branch of classifier-free guidance is zeros for both (threestudio's zero123 guidance).

A folder in a Zero-1-to-3 diffusers layout is loaded through ModelSource: unet/, image_encoder/, scheduler/,
optional feature_extractor/ and vae/, and the pose projection in one of the two published layouts:
  - cc_projection/ (the community Zero1to3StableDiffusionPipeline, e.g. kxic/zero123-xl; `CCProjection`);
  - clip_camera_projection/ (DreamGaussian's Zero123Pipeline, e.g. ashawkey/zero123-xl-diffusers and
    ashawkey/stable-zero123-diffusers; `CLIPCameraProjection`).
With vae/ the prior works in latent space like the real model (x = 0.18215 vae latent); without it in
pixel space at unet.config.sample_size (the toy view prior, models/priors/toy/view_prior.py).
The image encoder's input is the cond view resized to image_encoder.config.image_size and normalised
with feature_extractor's image_mean / image_std (CLIP's statistics when the folder has none).

Which pose convention a folder was trained with is not recorded in the published folders (both layouts
hold zero123-xl and Stable Zero123 alike), so the config field `pose_convention` decides. A folder may
declare it in model_index.json as "pose_convention" (this project's tiny test folders do,
models/priors/tiny_pipelines.py); a declared convention that differs from the config's is an error,
since the wrong T gives plausible-looking but wrong views rather than a crash.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from framework.config import ConfigError
from framework.value_checks import check_fields, one_of
from models.priors.base import DiffusionPrior
from models.priors.hf_loading import MissingWeightsError, ModelSource, load_errors
from models.priors.text_conditioned import DiffusersUNetOptions

VAE_SCALE = 0.18215  # Stable Diffusion 1.x latent scale, used by Zero-1-to-3
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
POSE_CONVENTIONS = ("zero123", "stable-zero123")
POSE_CONVENTION_KEY = "system.guidance.prior.pose_convention"


class CCProjection(ModelMixin, ConfigMixin):
    """Linear(image embedding (D) + pose T (4) -> cross-attention width), the pipeline's cc_projection."""

    @register_to_config
    def __init__(self, in_features: int = 772, out_features: int = 768):
        super().__init__()
        self.projection = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> (..., out_features)."""
        return self.projection(x)


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """The same linear layer in DreamGaussian's Zero123Pipeline layout (clip_camera_projection/): its config
    names the widths embedding_dim (D) and additional_embeddings (4); its weights are `proj.*`."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4):
        super().__init__()
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., D + 4) -> (..., D)."""
        return self.proj(x)


# The pose projection's subfolder -> its class, in the order a folder's model_index.json is searched.
PROJECTION_LAYOUTS: dict[str, type] = {"cc_projection": CCProjection, "clip_camera_projection": CLIPCameraProjection}


def encoder_pixels(rgb: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """rgb (B, 3, H, W) in [0, 1] -> the image encoder's pixel_values (B, 3, size, size), differentiable."""
    x = F.interpolate(rgb, (size, size), mode="bilinear", align_corners=False, antialias=rgb.shape[-1] > size)
    return (x - mean.view(1, 3, 1, 1).to(x)) / std.view(1, 3, 1, 1).to(x)


def condition_tokens(image_encoder: nn.Module, cc_projection: nn.Module, pixel_values: Tensor, pose: Tensor) -> Tensor:
    """pixel_values (B, 3, s, s), pose T (B, 4) -> the cross-attention token (B, 1, D)."""
    embeds = image_encoder(pixel_values=pixel_values).image_embeds  # (B, E)
    return cc_projection(torch.cat([embeds, pose.to(embeds)], dim=-1))[:, None, :]


def check_pose_convention(convention: str) -> None:
    if convention not in POSE_CONVENTIONS:
        raise ConfigError(f"{POSE_CONVENTION_KEY}={convention!r} is not one of {POSE_CONVENTIONS}")


def relative_pose(
    cond_elevation: Tensor, cond_azimuth: Tensor, cond_distance: Tensor,  # (B,) degrees, degrees, world units
    target_elevation: Tensor, target_azimuth: Tensor, target_distance: Tensor,  # (B,)
    convention: str = "zero123",
) -> Tensor:
    """-> T (B, 4), the camera change from the cond view to the target view, in `convention`:

        zero123:         [radians(delta polar), sin(delta azimuth), cos(delta azimuth), delta distance]
        stable-zero123:  [radians(delta polar), sin(delta azimuth), cos(delta azimuth), radians(90 - cond elevation)]

    Deltas are target minus cond. Zero-1-to-3 (Liu et al. 2023, Sec. 3.2) measures the polar angle from the
    +z pole, polar = 90 - elevation, so delta polar = (90 - target el) - (90 - cond el) = cond el - target el.
    threestudio's zero123_guidance.py and stable_zero123_guidance.py (`get_cond`) write the first three
    entries identically (deg2rad((90 - elevation) - (90 - cond_elevation_deg)), sin / cos of
    deg2rad(azimuth - cond_azimuth_deg)); Stable Zero123 replaces the distance change by the cond view's
    absolute polar angle, deg2rad(90 - cond_elevation_deg) (Stability AI's "elevation conditioning": the
    model is told the input view's elevation instead of inferring it). Azimuth enters only through sin / cos, so any two azimuths
    that differ by a multiple of 360 degrees give the same T (cond 170, target -170 is a change of +20).
    """
    check_pose_convention(convention)
    d_polar = torch.deg2rad(cond_elevation - target_elevation)
    d_az = torch.deg2rad(target_azimuth - cond_azimuth)
    if convention == "zero123":
        last = target_distance - cond_distance
    else:
        last = torch.deg2rad(90.0 - cond_elevation)
    return torch.stack([d_polar, torch.sin(d_az), torch.cos(d_az), last], dim=-1)


def pose_from_cameras(
    cond: dict[str, Any], batch: dict[str, Any], n: int, device: torch.device, convention: str = "zero123"
) -> Tensor:
    """Cond camera (floats, degrees / world units) and the batch's target cameras ((B,) or (1,)) -> T (n, 4)."""
    def rows(value: Any) -> Tensor:
        return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1).expand(n)

    missing = [k for k in ("elevation", "azimuth", "distance") if k not in batch]
    if missing:
        raise ValueError(f"Zero123Prior needs the target cameras batch['elevation'/'azimuth'/'distance']; missing {missing}")
    return relative_pose(
        rows(cond["elevation"]), rows(cond["azimuth"]), rows(cond["distance"]),
        rows(batch["elevation"]), rows(batch["azimuth"]), rows(batch["distance"]),
        convention,
    )


@dataclass
class Zero123PriorConfig(DiffusersUNetOptions):
    _target_: str = "models.priors.zero123.Zero123Prior"
    pretrained_model_name_or_path: str = "models/priors/toy/weights/toy-view-prior"
    """A local folder (or hub id) in a Zero-1-to-3 diffusers layout (above); default: the trained toy prior."""
    pose_convention: str = "zero123"
    """The pose vector T the weights were trained with: 'zero123' (zero123 / zero123-xl, the toy view prior)
    or 'stable-zero123' (Stable Zero123: last entry the cond view's polar angle instead of the distance change)."""

    def __post_init__(self) -> None:
        check_fields(self, pose_convention=one_of(*POSE_CONVENTIONS))


class Zero123Prior(DiffusionPrior):
    """Frozen Zero-1-to-3 denoiser. Public tensors: rgb (B, H, W, 3) in [0, 1]; x (B, C, h, w) in its space."""

    def __init__(self, cfg: Zero123PriorConfig, **runtime_objects: Any):
        super().__init__()
        self.cfg = cfg
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.pose_convention = cfg.pose_convention
        source = ModelSource(
            cfg.pretrained_model_name_or_path,
            what="Zero-1-to-3",
            config_key="system.guidance.prior.pretrained_model_name_or_path",
            subfolders=["unet", "image_encoder", "cc_projection (or clip_camera_projection)", "scheduler"],
            local_files_only=cfg.local_files_only,
        )
        index = self._model_index(source)
        declared = index.get("pose_convention")
        if declared is not None and declared != cfg.pose_convention:
            raise ConfigError(
                f"{source.name!r} declares pose_convention {declared!r} in its model_index.json but the config "
                f"asks for {cfg.pose_convention!r}; set {POSE_CONVENTION_KEY}={declared}"
            )
        projection = next((name for name in PROJECTION_LAYOUTS if name in index), None)
        if projection is None:
            raise source.missing(f"model_index.json lists neither of {list(PROJECTION_LAYOUTS)}")
        self.weights_dtype = torch.float16 if (cfg.half_precision_weights and torch.cuda.is_available()) else torch.float32
        scheduler = source.load(DDPMScheduler, "scheduler")
        if scheduler.config.prediction_type != "epsilon":
            raise MissingWeightsError(f"{source.name!r}: Zero-1-to-3 predicts epsilon; got {scheduler.config.prediction_type!r}")
        self.unet = source.load(UNet2DConditionModel, "unet", torch_dtype=self.weights_dtype, variant=cfg.variant)
        self.image_encoder = source.load(CLIPVisionModelWithProjection, "image_encoder", torch_dtype=self.weights_dtype)
        # either layout's linear layer, called the same way: (B, E + 4) -> (B, D)
        self.cc_projection = source.load(PROJECTION_LAYOUTS[projection], projection, torch_dtype=self.weights_dtype)
        self.vae = source.load(AutoencoderKL, "vae", torch_dtype=self.weights_dtype) if "vae" in index else None
        mean, std = CLIP_MEAN, CLIP_STD
        if "feature_extractor" in index:
            processor = source.load(CLIPImageProcessor, "feature_extractor")
            mean, std = list(processor.image_mean), list(processor.image_std)
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        for module in (self.unet, self.image_encoder, self.cc_projection, self.vae):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        if cfg.enable_attention_slicing:
            self.unet.set_attention_slice("auto")
        if torch.cuda.is_available():  # the CUDA speed options, as models/priors/text_conditioned.py applies them
            if cfg.channels_last:
                self.unet.to(memory_format=torch.channels_last)
            if cfg.torch_compile:
                self.unet = torch.compile(self.unet)
        self.sample_size = int(self.unet.config.sample_size)
        self.encoder_size = int(self.image_encoder.config.image_size)
        self.set_noise_schedule(scheduler.alphas_cumprod)
        self.cond: Optional[dict[str, Any]] = None

    @staticmethod
    def _model_index(source: ModelSource) -> dict[str, Any]:
        """The folder's model_index.json (which optional parts, vae / feature_extractor, it has)."""
        try:
            if source.is_local:
                path = os.path.join(source.name, "model_index.json")
            else:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(source.name, "model_index.json", local_files_only=source.local_files_only)
            with open(path) as f:
                return json.load(f)
        except load_errors() as err:
            raise source.missing(f"model_index.json: {type(err).__name__}: {err}") from err

    def train(self, mode: bool = True) -> "Zero123Prior":
        super().train(mode)
        for module in (self.unet, self.image_encoder, self.cc_projection, self.vae):
            if module is not None:
                module.eval()
        return self

    @property
    def latent_space(self) -> bool:
        return self.vae is not None

    # ---- prior space ------------------------------------------------------------------------
    def _pixels(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1] -> (B, 3, S, S) in [-1, 1], S = the image size the prior's space starts from."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"expected rgb (B, H, W, 3), got {tuple(rgb.shape)}")
        size = self.sample_size * (8 if self.latent_space else 1)
        x = F.interpolate(rgb.permute(0, 3, 1, 2), (size, size), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1], differentiable -> x (B, C, s, s): pixels in [-1, 1] or 0.18215 * VAE latents."""
        x = self._pixels(rgb)
        if not self.latent_space:
            return x
        latents = self.vae.encode(x.to(self.weights_dtype)).latent_dist.sample()
        return (latents * VAE_SCALE).to(rgb.dtype)

    def decode(self, x: Tensor) -> Tensor:
        """x (B, C, s, s) -> rgb (B, s', s', 3) in [0, 1]."""
        if self.latent_space:
            x = self.vae.decode((x / VAE_SCALE).to(self.weights_dtype)).sample.float()
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    # ---- the condition ----------------------------------------------------------------------
    @torch.no_grad()
    def make_condition(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> dict[str, Any]:
        """rgb (1, H, W, 3) in [0, 1] + its camera -> {"c_concat" (1, C, s, s), "image_embeds" (1, E), "elevation",
        "azimuth", "distance"}: what predict_noise needs of a cond view."""
        if rgb.ndim != 4 or rgb.shape[0] != 1 or rgb.shape[-1] != 3:
            raise ValueError(f"the condition image must be (1, H, W, 3) in [0, 1], got {tuple(rgb.shape)}")
        rgb = rgb.float().to(self.alphas_cumprod.device)
        x = self._pixels(rgb)
        if self.latent_space:
            x = self.vae.encode(x.to(self.weights_dtype)).latent_dist.mode()  # unscaled, as Zero-1-to-3
        pixels = encoder_pixels(rgb.permute(0, 3, 1, 2), self.encoder_size, self.image_mean, self.image_std)
        embeds = self.image_encoder(pixel_values=pixels.to(self.weights_dtype)).image_embeds
        return {"c_concat": x, "image_embeds": embeds, "elevation": float(elevation_deg),
                "azimuth": float(azimuth_deg), "distance": float(distance)}

    def set_condition_image(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        """Store the cond view rgb (1, H, W, 3) in [0, 1], its embeddings and its camera (degrees, world units)."""
        self.cond = self.make_condition(rgb, elevation_deg, azimuth_deg, distance)

    def predict_noise(
        self,
        x_t: Tensor,  # (B, C, h, w)
        t: Tensor,  # (B,) long in [0, T)
        condition: Any,  # None (the stored cond view) or a dict (below)
        batch: dict[str, Any],  # target cameras: "elevation", "azimuth" (B,) degrees, "distance" (B,)
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> (eps_cond (B, C, h, w), eps_uncond (B, C, h, w) or None); one batched forward on [cond, uncond].

        `condition`: None uses the view given to set_condition_image; a dict {"rgb": (1, H, W, 3), "elevation",
        "azimuth", "distance"} or one as make_condition returns overrides it for this call; an optional "T"
        (B, 4) entry gives the relative pose directly instead of reading it from the batch's cameras.
        """
        if condition is None:
            condition = self.cond
        if condition is None:
            raise ValueError("Zero123Prior has no condition image: call set_condition_image(rgb, elevation, azimuth, distance)")
        if "c_concat" not in condition:
            if "rgb" not in condition:
                raise ValueError("condition must hold 'rgb' (1, H, W, 3) and its camera, or make_condition's output")
            pose = condition.get("T")
            condition = self.make_condition(condition["rgb"], condition["elevation"], condition["azimuth"], condition["distance"])
            if pose is not None:
                condition["T"] = pose
        b, dtype = x_t.shape[0], self.weights_dtype
        pose = condition.get("T")
        if pose is None:
            pose = pose_from_cameras(condition, batch, b, x_t.device, self.pose_convention)
        else:
            pose = pose.to(x_t.device).float()
        embeds = condition["image_embeds"].to(x_t.device).expand(b, -1)
        tokens = self.cc_projection(torch.cat([embeds, pose.to(embeds.dtype)], dim=-1).to(dtype))[:, None, :]
        c_concat = condition["c_concat"].to(x_t.device, dtype).expand(b, -1, -1, -1)
        x_in, t_in = x_t.to(dtype), t.to(x_t.device)
        if need_uncond:
            tokens = torch.cat([tokens, torch.zeros_like(tokens)])
            c_concat = torch.cat([c_concat, torch.zeros_like(c_concat)])
            x_in, t_in = torch.cat([x_in, x_in]), torch.cat([t_in, t_in])
        eps = self.unet(torch.cat([x_in, c_concat], dim=1), t_in, encoder_hidden_states=tokens).sample.to(x_t.dtype)
        if need_uncond:
            eps_cond, eps_uncond = eps.chunk(2)
            return eps_cond, eps_uncond
        return eps, None
