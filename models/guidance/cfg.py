"""Classifier-free guidance, written once for the whole project (and Perp-Neg, its multi-prompt form).

Meaning of `guidance_scale` everywhere in this project (the diffusers convention):

    eps = eps_u + s * (eps_c - eps_u)

s = 1 is the conditional model alone; s = 0 the unconditional. threestudio's SD / IF / SJC
guidances use eps = eps_c + s' (eps_c - eps_u), i.e. s = s' + 1: their published 100 (SD) and
20 (IF) are 101 and 21 here. Method configs carry the translated numbers.

Every distillation rule (SDS, SJC, VSD's pretrained branch, ...) gets its guided noise from
`guided_noise`, so view-dependent prompts and Perp-Neg work with all of them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from models.guidance.prior import DiffusionPrior
from models.prompt_processors.text_condition import TextCondition
from models.prompt_processors.view_dependent import perp_neg_guidance


def classifier_free_guidance(eps_uncond: Tensor | None, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """eps_u + s (eps_c - eps_u); with s == 1 (or no unconditional prediction) just eps_c."""
    if eps_uncond is None or guidance_scale == 1.0:
        return eps_cond
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def guided_noise(
    prior: DiffusionPrior,
    x_t: Tensor,  # (B, C, h, w)
    t: Tensor,  # (B,) long
    condition: Any,
    batch: dict[str, Any],
    guidance_scale: float,
) -> Tensor:
    """The guided eps_hat (B, C, h, w) for one noisy batch, under no_grad by the caller.

    Plain CFG from the prior's (eps_cond, eps_uncond); or, when the text condition asks for
    Perp-Neg, one UNet forward on [pos, uncond, neg_1, neg_2] combined by `perp_neg_guidance`.
    """
    if isinstance(condition, TextCondition) and condition.use_perp_neg:
        if not hasattr(prior, "eps_from_embeddings"):
            raise ValueError(f"Perp-Neg needs a text-conditioned prior; {type(prior).__name__} is not one")
        pos, uncond, negs, neg_weights = condition.perp_neg_for_batch(batch)
        k = negs.shape[1]
        embeddings = torch.cat([pos, uncond, *negs.unbind(1)])  # ((2 + K) B, L, D)
        eps = prior.eps_from_embeddings(torch.cat([x_t] * (2 + k)), torch.cat([t] * (2 + k)), embeddings)
        eps_pos, eps_uncond, *eps_negs = eps.chunk(2 + k)
        return perp_neg_guidance(eps_uncond, eps_pos, torch.stack(eps_negs, dim=1), neg_weights.to(x_t.device), guidance_scale)
    need_uncond = guidance_scale != 1.0
    eps_cond, eps_uncond = prior.predict_noise(x_t, t, condition, batch, need_uncond)
    return classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
