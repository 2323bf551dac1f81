"""Classifier-free guidance and Perp-Neg's noise combination against hand-computed values."""
import torch

from models.guidance.cfg import classifier_free_guidance, perp_component, perp_neg_guidance


def _reference_perp_neg(eu, ep, en, w, s):
    out = torch.empty_like(eu)
    for b in range(eu.shape[0]):
        epos = (ep[b] - eu[b]).flatten()
        acc = epos.clone()
        for k in range(en.shape[1]):
            a = (en[b, k] - eu[b]).flatten()
            acc = acc + w[b, k] * (a - torch.dot(a, epos) / torch.dot(epos, epos) * epos)
        out[b] = eu[b] + s * acc.reshape(eu.shape[1:])
    return out


def test_perp_neg_guidance_hand_made():
    # B=1, 2 elements: eps_u = 0, e_pos = (1, 0); neg = (1, 1) -> perp = (0, 1).
    eu = torch.zeros(1, 2)
    ep = torch.tensor([[1.0, 0.0]])
    en = torch.tensor([[[1.0, 1.0], [3.0, -2.0]]])
    w = torch.tensor([[-0.5, 2.0]])
    out = perp_neg_guidance(eu, ep, en, w, guidance_scale=10.0)
    # e_pos + (-0.5)(0, 1) + 2 (0, -2) = (1, -4.5); times 10
    assert torch.allclose(out, torch.tensor([[10.0, -45.0]]))


def test_perp_neg_guidance_matches_independent_formula_and_cfg():
    g = torch.Generator().manual_seed(0)
    B, K, C, H, W = 3, 2, 4, 5, 6
    eu = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    ep = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    en = torch.randn(B, K, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(B, K, generator=g, dtype=torch.float64)
    out = perp_neg_guidance(eu, ep, en, w, 7.5)
    assert out.shape == (B, C, H, W)
    assert torch.allclose(out, _reference_perp_neg(eu, ep, en, w, 7.5), atol=1e-10)
    # zero negative weights -> plain CFG
    out0 = perp_neg_guidance(eu, ep, en, torch.zeros(B, K, dtype=torch.float64), 7.5)
    assert torch.allclose(out0, classifier_free_guidance(eu, ep, 7.5), atol=1e-12)
    # the negatives actually matter when weighted
    assert not torch.allclose(out, out0)


def test_perp_component_orthogonal_per_sample():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    b = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    p = perp_component(a, b)
    dots = (p * b).flatten(1).sum(1)
    assert torch.allclose(dots, torch.zeros(4, dtype=torch.float64), atol=1e-10)
    # and a - p is parallel to b (it is the projection)
    proj = a - p
    coef = (proj.flatten(1) * b.flatten(1)).sum(1) / (b.flatten(1) ** 2).sum(1)
    assert torch.allclose(proj, coef.view(4, 1, 1, 1) * b, atol=1e-10)


def test_threestudio_scales_map_to_s_plus_1_for_cfg_and_to_s_for_perp_neg():
    """threestudio's two lines, written as its code writes them, against ours (models/guidance/cfg.py)."""
    g = torch.Generator().manual_seed(2)
    eps_c, eps_u = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).unbind(0)
    eps_negs = torch.randn(1, 2, 3, 4, 4, generator=g, dtype=torch.float64)
    weights = torch.tensor([[-1.3, 0.4]], dtype=torch.float64)
    s = 100.0
    # threestudio's SD / IF guidance: noise_pred_text + guidance_scale * (noise_pred_text - noise_pred_uncond)
    threestudio_cfg = eps_c + s * (eps_c - eps_u)
    torch.testing.assert_close(classifier_free_guidance(eps_u[None], eps_c[None], s + 1)[0], threestudio_cfg)
    # threestudio's Perp-Neg: noise_pred_uncond + guidance_scale * (e_pos + accum_grad)
    e_pos = eps_c - eps_u
    accum = sum(w * perp_component((n - eps_u)[None], e_pos[None])[0] for w, n in zip(weights[0], eps_negs[0]))
    threestudio_perp_neg = eps_u + s * (e_pos + accum)
    ours = perp_neg_guidance(eps_u[None], eps_c[None], eps_negs, weights, s)[0]
    torch.testing.assert_close(ours, threestudio_perp_neg)
