"""Classifier-free guidance, written once for the whole project.

Meaning of `guidance_scale` everywhere in this project (the diffusers convention):

    eps = eps_u + s * (eps_c - eps_u)

s = 1 is the conditional model alone; s = 0 the unconditional. threestudio's SD / IF / SJC
guidances use eps = eps_c + s' (eps_c - eps_u), i.e. s = s' + 1: their published 100 (SD) and
20 (IF) are 101 and 21 here. Method configs carry the translated numbers.
"""
from __future__ import annotations

from torch import Tensor


def classifier_free_guidance(eps_uncond: Tensor | None, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """eps_u + s (eps_c - eps_u); with s == 1 (or no unconditional prediction) just eps_c."""
    if eps_uncond is None or guidance_scale == 1.0:
        return eps_cond
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
