"""What a text prompt processor hands to text-conditioned priors (Stable Diffusion, DeepFloyd IF).

The embeddings are computed once, when the run starts; per step the condition only picks rows:
the view-dependent prompt of each camera (DreamFusion Sec. 3.2), or, with Perp-Neg, the mixed
positive embedding and the two negative view prompts with their weights (Armandpour et al. 2023).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from models.priors.base import CameraBatchCondition
from models.prompt_processors.view_dependent import BACK, FRONT, OVERHEAD, SIDE, ViewDirections, perp_neg_weights


@dataclass
class PerpNegFunctions:
    """(a, b, c) of f(r) = a exp(-b r) + c for each Perp-Neg weight (REFERENCE.md, threestudio's defaults)."""

    f_sb: Sequence[float] = (1.0, 0.5, -0.606)
    f_fsb: Sequence[float] = (1.0, 0.5, 0.967)
    f_fs: Sequence[float] = (4.0, 0.5, -2.426)
    f_sf: Sequence[float] = (4.0, 0.5, -2.426)


@dataclass
class TextCondition(CameraBatchCondition):
    prompt: str
    text: Tensor  # (1, L, D) the prompt as written
    uncond: Tensor  # (1, L, D) the negative prompt ("" = unconditional)
    text_views: Tensor  # (V, L, D) view-dependent prompts, rows [side, front, back, overhead (, front side, back side)]
    view_dependent: bool = True
    directions: ViewDirections = field(default_factory=ViewDirections)
    use_perp_neg: bool = False
    perp_neg: PerpNegFunctions = field(default_factory=PerpNegFunctions)

    @staticmethod
    def _angles(batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
        if "elevation" not in batch or "azimuth" not in batch:
            raise ValueError(
                "view-dependent prompting needs the camera batch's 'elevation' and 'azimuth' (degrees); "
                "set prompt_processor.view_dependent_prompting=false to use the plain prompt"
            )
        return batch["elevation"].to(device).float(), batch["azimuth"].to(device).float()

    def directions_of(self, batch: dict[str, Any]) -> Tensor:
        """(B,) long view indices of the batch's cameras."""
        elevation, azimuth = self._angles(batch, self.text.device)
        return self.directions.assign(elevation, azimuth)

    def for_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """-> {"text_embeddings": (B or 1, L, D), "uncond_embeddings": (1, L, D)} for this camera batch."""
        if not self.view_dependent:
            return {"text_embeddings": self.text, "uncond_embeddings": self.uncond}
        return {"text_embeddings": self.text_views[self.directions_of(batch)], "uncond_embeddings": self.uncond}

    def perp_neg_for_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> pos (B, L, D), uncond (B, L, D), negs (B, 2, L, D), neg_weights (B, 2) for perp_neg_guidance.

        pos = the azimuth-interpolated mix of the front / side / back prompt embeddings, or the overhead
        prompt for an overhead view; negs = the two view prompts to push away from
        (models/prompt_processors/view_dependent.py).
        """
        elevation, azimuth = self._angles(batch, self.text.device)
        f = self.perp_neg
        pos_mix, neg_index, neg_weights = perp_neg_weights(
            azimuth, elevation, self.directions.overhead_threshold_deg, f.f_sb, f.f_fsb, f.f_fs, f.f_sf
        )
        # pos_mix weighs [front, side, back]; neg_index holds view indices (side 0, front 1, back 2).
        front_side_back = self.text_views[[FRONT, SIDE, BACK]]  # (3, L, D)
        pos = torch.einsum("bk,kld->bld", pos_mix.to(front_side_back.dtype), front_side_back)
        # An overhead view's positive is the overhead prompt itself, as in threestudio (its negatives
        # have weight 0 there, so Perp-Neg is plain CFG on ", overhead view").
        overhead = (elevation > self.directions.overhead_threshold_deg).view(-1, 1, 1)
        pos = torch.where(overhead, self.text_views[OVERHEAD].to(pos.dtype), pos)
        negs = self.text_views[neg_index]  # (B, 2, L, D)
        uncond = self.uncond.expand(pos.shape[0], -1, -1)
        return pos, uncond, negs, neg_weights
