"""Classifier-free guidance, written once for the whole project, and Perp-Neg, its multi-prompt form.

Meaning of `guidance_scale` everywhere in this project (the diffusers convention):

    eps = eps_u + s * (eps_c - eps_u)

s = 1 is the conditional model alone; s = 0 the unconditional. Perp-Neg uses the same s in the
same place, eps = eps_u + s [e_pos + sum_i w_i perp(...)], so with all w_i = 0 it is plain CFG.

Translating threestudio's published scales s' (REFERENCE.md):
- plain CFG: threestudio's SD / IF / SJC guidances write eps = eps_c + s' (eps_c - eps_u), i.e.
  s = s' + 1: their 100 (SD) and 20 (IF) are 101 and 21 here. Method configs carry these numbers.
- Perp-Neg: threestudio's Perp-Neg line is already eps_u + s' (e_pos + ...), so s = s': with
  `use_perp_neg=true`, give threestudio's number as it is (e.g. guidance_scale=100, not 101).
tests/models/test_cfg.py checks both mappings against threestudio's two lines written out.

Every distillation rule (SDS, SJC, VSD's pretrained branch, ...) gets its guided noise from
`guided_noise`, so view-dependent prompts and Perp-Neg work with all of them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from framework.config import ConfigError
from models.priors.base import DiffusionPrior
from models.prompt_processors.text_condition import TextCondition


def classifier_free_guidance(eps_uncond: Tensor | None, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """eps_u + s (eps_c - eps_u); with s == 1 (or no unconditional prediction) just eps_c."""
    if eps_uncond is None or guidance_scale == 1.0:
        return eps_cond
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def perp_component(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """perp(a, b) = a - (a.b / ||b||^2) b per sample; a, b (B, ...) -> (B, ...)."""
    dims = tuple(range(1, a.dim()))
    dot = (a * b).sum(dim=dims, keepdim=True)  # a.b per sample, shape (B, 1, ..., 1)
    norm_sq = (b * b).sum(dim=dims, keepdim=True)  # ||b||^2 per sample
    # eps guards a zero e_pos (cond == uncond); then the projection is zero and perp(a, b) = a.
    return a - dot / (norm_sq + eps) * b


def perp_neg_guidance(
    eps_uncond: Tensor,
    eps_pos: Tensor,
    eps_negs: Tensor,
    neg_weights: Tensor,
    guidance_scale: float,
) -> Tensor:
    """Perp-Neg guided noise (Armandpour et al. 2023, Eq. 7, in this project's CFG convention).

    eps_uncond (B, ...), eps_pos (B, ...), eps_negs (B, K, ...), neg_weights (B, K) -> eps (B, ...):
        eps = eps_u + s [ e_pos + sum_i w_i perp(eps_i - eps_u, e_pos) ],  e_pos = eps_pos - eps_u.
    With all w_i = 0 this is exactly classifier_free_guidance(eps_u, eps_pos, s).
    """
    B, K = neg_weights.shape
    e_pos = eps_pos - eps_uncond  # e_pos = eps_pos - eps_u
    e_negs = eps_negs - eps_uncond.unsqueeze(1)  # eps_i - eps_u, (B, K, ...)
    # perp(eps_i - eps_u, e_pos) for every i: fold K into the batch so each pair gets its own dot product.
    e_pos_rep = e_pos.unsqueeze(1).expand_as(e_negs).reshape(B * K, *e_pos.shape[1:])
    perps = perp_component(e_negs.reshape(B * K, *e_pos.shape[1:]), e_pos_rep).reshape(e_negs.shape)
    w = neg_weights.to(perps.dtype).reshape(B, K, *([1] * (perps.dim() - 2)))
    neg_term = (w * perps).sum(dim=1)  # sum_i w_i perp(eps_i - eps_u, e_pos)
    return eps_uncond + guidance_scale * (e_pos + neg_term)  # eps_u + s [ e_pos + sum_i ... ]


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
    Perp-Neg, one forward of the prior's `eps_from_embeddings` on [pos, uncond, neg_1, neg_2]
    combined by `perp_neg_guidance`.
    """
    if isinstance(condition, TextCondition) and condition.use_perp_neg:
        if not prior.takes_text_embeddings:
            raise ConfigError(
                f"Perp-Neg needs a text-conditioned prior (Stable Diffusion, DeepFloyd IF, the toy text-to-image prior); "
                f"{type(prior).__name__} is not one. Set system.prompt_processor.use_perp_neg=false"
            )
        pos, uncond, negs, neg_weights = condition.perp_neg_for_batch(batch)
        k = negs.shape[1]
        embeddings = torch.cat([pos, uncond, *negs.unbind(1)])  # ((2 + K) B, L, D)
        eps = prior.eps_from_embeddings(torch.cat([x_t] * (2 + k)), torch.cat([t] * (2 + k)), embeddings)
        eps_pos, eps_uncond, *eps_negs = eps.chunk(2 + k)
        return perp_neg_guidance(eps_uncond, eps_pos, torch.stack(eps_negs, dim=1), neg_weights.to(x_t.device), guidance_scale)
    need_uncond = guidance_scale != 1.0
    eps_cond, eps_uncond = prior.predict_noise(x_t, t, condition, batch, need_uncond)
    return classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
