"""The exact-score prior against its closed form (REFERENCE.md, SDS: exact-score prior)."""
import math

import pytest
import torch

from framework.cameras import orbit_c2w, spherical_to_cartesian
from models.priors.toy.exact_score import ToyExactScorePrior, ToyExactScorePriorConfig, posterior_mean
from models.priors.toy.exemplars import ExemplarBank, camera_distance
from models.prompt_processors.toy import ToyCondition, ToyPromptProcessor, ToyPromptProcessorConfig
from models.priors.toy.scenes import ToyPromptError

RES = 8


def tiny_prior(tmp_path, **kw):
    args = dict(
        prompt="a red sphere", resolution=RES, n_exemplars=6, k_nearest=0, supersample=1,
        cache_dir=str(tmp_path), uncond_prompts=["a blue cube", "a green cone"], n_uncond_exemplars=4,
    )  # fmt: skip
    cfg = ToyExactScorePriorConfig(**{**args, **kw})
    return ToyExactScorePrior(cfg)


def closed_form(x_t, exemplars, abar):
    """Literal REFERENCE.md formula, one sample at a time, in float64."""
    x, ex = x_t.double().reshape(-1), exemplars.double().reshape(exemplars.shape[0], -1)
    logits = torch.stack([-((x - math.sqrt(abar) * e) ** 2).sum() / (2 * (1 - abar)) for e in ex])
    w = torch.softmax(logits, 0)
    x0 = (w[:, None] * ex).sum(0)
    eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    return x0, eps


def test_posterior_mean_matches_formula():
    torch.manual_seed(0)
    ex = torch.randn(5, 12)
    x_t = torch.randn(3, 12)
    abar = torch.tensor([0.9, 0.5, 0.05])
    got = posterior_mean(x_t, ex, abar)
    got_batched = posterior_mean(x_t, ex[None].expand(3, 5, 12), abar)
    for b in range(3):
        x0, _ = closed_form(x_t[b], ex, abar[b].item())
        assert torch.allclose(got[b].double(), x0, atol=1e-5)
        assert torch.allclose(got_batched[b].double(), x0, atol=1e-5)



def test_posterior_mean_with_log_weights():
    """Weights w_i enter as log w_i added to the logits; integer weights equal repeating exemplars."""
    torch.manual_seed(0)
    ex = torch.randn(3, 12)
    x_t = torch.randn(2, 12)
    abar = torch.tensor([0.7, 0.2])
    w = torch.tensor([1.0, 3.0, 2.0])
    repeated = torch.cat([ex[0:1], ex[1:2].expand(3, -1), ex[2:3].expand(2, -1)])
    want = posterior_mean(x_t, repeated, abar)
    assert torch.allclose(posterior_mean(x_t, ex, abar, w.log()), want, atol=1e-5)
    assert torch.allclose(posterior_mean(x_t, ex[None].expand(2, 3, 12), abar, w.log()[None].expand(2, 3) + 5.0), want, atol=1e-5)
    assert not torch.allclose(posterior_mean(x_t, ex, abar), want, atol=1e-3)

def test_prior_eps_and_x0_with_all_exemplars(tmp_path):
    prior = tiny_prior(tmp_path)
    cond = ToyPromptProcessor(ToyPromptProcessorConfig(prompt="a red sphere"))()
    assert isinstance(cond, ToyCondition)
    bank = prior.bank("a red sphere")
    assert bank.images.shape == (6, RES, RES, 3)
    ex = bank.images.permute(0, 3, 1, 2) * 2 - 1  # prior space
    torch.manual_seed(1)
    x_t = torch.randn(2, 3, RES, RES)
    t = torch.tensor([100, 700])
    eps_c, eps_u = prior.predict_noise(x_t, t, cond, {}, need_uncond=False)
    assert eps_u is None
    x0 = prior.predict_x0(x_t, t, cond, {})
    for b in range(2):
        abar = prior.alphas_cumprod[t[b]].item()
        x0_ref, eps_ref = closed_form(x_t[b], ex, abar)
        assert torch.allclose(x0[b].reshape(-1).double(), x0_ref, atol=1e-4)
        assert torch.allclose(eps_c[b].reshape(-1).double(), eps_ref, atol=1e-3)
    # SDS identity: (1 - abar)(eps_hat - eps) = sqrt(abar (1 - abar)) (x - x0_hat)
    x = ex[0:2] * 0.5
    noise = torch.randn_like(x)
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
    eps_hat, _ = prior.predict_noise(z_t, t, cond, {}, False)
    lhs = (1 - abar) * (eps_hat - noise)
    rhs = (abar * (1 - abar)).sqrt() * (x - prior.predict_x0(z_t, t, cond, {}))
    assert torch.allclose(lhs, rhs, atol=1e-4)


def test_low_noise_recovers_the_exemplar(tmp_path):
    prior = tiny_prior(tmp_path)
    ex = prior.bank("a red sphere").images.permute(0, 3, 1, 2) * 2 - 1
    t = torch.tensor([0])  # abar = 0.99915
    abar = prior.alphas_cumprod[0]
    for j in range(ex.shape[0]):
        x_t = abar.sqrt() * ex[j : j + 1]
        x0 = prior.predict_x0(x_t, t, "a red sphere", {})
        assert torch.allclose(x0, ex[j : j + 1], atol=1e-4)


def test_unconditional_uses_the_union_of_uncond_scenes(tmp_path):
    prior = tiny_prior(tmp_path)
    x_t = torch.randn(1, 3, RES, RES)
    t = torch.tensor([400])
    eps_c, eps_u = prior.predict_noise(x_t, t, "a red sphere", {}, need_uncond=True)
    union = torch.cat([prior.bank(p, 4).images for p in ("a blue cube", "a green cone")]).permute(0, 3, 1, 2) * 2 - 1
    _, eps_ref = closed_form(x_t[0], union, prior.alphas_cumprod[400].item())
    assert torch.allclose(eps_u[0].reshape(-1).double(), eps_ref, atol=1e-3)
    assert not torch.allclose(eps_c, eps_u)
    assert prior.state_dict() == {} or list(prior.state_dict()) == []  # banks are never checkpointed


def test_camera_nearest_indices(tmp_path):
    bank = ExemplarBank("a red sphere", 40, 4, 4, seed=3, cache_dir=tmp_path)
    # querying each bank camera returns itself first
    idx = bank.nearest(bank.elevation[:5], bank.azimuth[:5], bank.distance[:5], bank.fovy[:5], k=3)
    assert idx.shape == (5, 3) and torch.equal(idx[:, 0], torch.arange(5))
    # brute force against the documented metric
    q = (torch.tensor([30.0]), torch.tensor([-120.0]), torch.tensor([1.2]), torch.tensor([0.9]))
    ratio = torch.log((bank.distance * torch.tan(bank.fovy / 2)) / (1.2 * math.tan(0.45)))
    rq = orbit_c2w(q[0], q[1], torch.ones(1))[0, :3, :3]
    rot_angle = torch.stack([torch.acos(((rq.T @ r).trace().clamp(-1, 3) - 1) / 2) for r in bank.c2w[:, :3, :3]])
    v = spherical_to_cartesian(q[0], q[1], torch.ones(1))
    dir_angle = torch.acos((v @ (bank.c2w[:, :3, 3] / bank.distance[:, None]).T).clamp(-1, 1))[0]
    for angle, theta in (("rotation", rot_angle), ("direction", dir_angle)):
        bank.camera_angle = angle
        metric = theta**2 / math.radians(10.0) ** 2 + ratio**2 / 0.1**2
        assert torch.allclose(bank.camera_distance(*q)[0], metric, rtol=1e-3, atol=1e-3)
        assert torch.equal(bank.nearest(*q, k=4)[0], metric.argsort()[:4])
    # near the pole, an azimuth change rolls the image: only the rotation angle sees it
    ref = orbit_c2w(torch.tensor([85.0]), torch.tensor([0.0]), torch.ones(1))[:, :3, :3]
    query = (torch.tensor([85.0]), torch.tensor([60.0]), torch.tensor([1.0]), torch.tensor([0.9]))
    log_size = -torch.log(torch.tensor([1.0 * math.tan(0.45)]))
    by_rot = camera_distance(*query, ref, log_size, sigma_dir_deg=1.0, angle="rotation")
    by_dir = camera_distance(*query, ref, log_size, sigma_dir_deg=1.0, angle="direction")
    assert by_rot.sqrt().item() > 55.0  # degrees of relative rotation (~60)
    assert by_dir.sqrt().item() == pytest.approx(math.degrees(math.acos(math.cos(math.radians(85)) ** 2 * 0.5 + math.sin(math.radians(85)) ** 2)), abs=0.05)


def test_prior_conditions_on_camera(tmp_path):
    prior = tiny_prior(tmp_path, k_nearest=2)
    bank = prior.bank("a red sphere")
    j = 4
    batch = {"elevation": bank.elevation[j : j + 1], "azimuth": bank.azimuth[j : j + 1],
             "distance": bank.distance[j : j + 1], "fovy": bank.fovy[j : j + 1]}  # fmt: skip
    ex = prior.exemplars_for("a red sphere", batch, 1, torch.device("cpu"))
    assert ex.shape == (1, 2, 3 * RES * RES)
    flat = (bank.images.permute(0, 3, 1, 2) * 2 - 1).reshape(6, -1)
    assert torch.equal(ex[0, 0], flat[j])
    # x0_hat mixes those 2 exemplars only
    x_t = torch.randn(1, 3, RES, RES)
    x0 = prior.predict_x0(x_t, torch.tensor([900]), "a red sphere", batch)
    idx = bank.nearest(*[batch[k] for k in ("elevation", "azimuth", "distance", "fovy")], k=2)[0]
    x0_ref, _ = closed_form(x_t, flat[idx], prior.alphas_cumprod[900].item())
    assert torch.allclose(x0.reshape(-1).double(), x0_ref, atol=1e-4)
    # unconditional: each uncond scene's own nearest exemplars, concatenated
    prior_u = tiny_prior(tmp_path, k_nearest=2, k_nearest_uncond=3)
    ex_u = prior_u.exemplars_for("a red sphere", batch, 1, torch.device("cpu"), uncond=True)
    expected = []
    for p in ("a blue cube", "a green cone"):
        ub = prior_u.bank(p, 4)
        near = ub.nearest(*[batch[k] for k in ("elevation", "azimuth", "distance", "fovy")], k=3)[0]
        expected.append((ub.images.permute(0, 3, 1, 2) * 2 - 1).reshape(4, -1)[near])
    assert torch.equal(ex_u[0], torch.cat(expected))
    with pytest.raises(KeyError, match="k_nearest"):
        prior.predict_noise(torch.zeros(1, 3, RES, RES), torch.tensor([5]), "a red sphere", {}, False)


def test_encode_decode_and_schedule(tmp_path):
    prior = tiny_prior(tmp_path)
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    x = prior.encode(rgb)
    assert x.shape == (2, 3, RES, RES) and x.min() >= -1 and x.max() <= 1
    x.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    same = torch.rand(1, RES, RES, 3)
    assert torch.allclose(prior.decode(prior.encode(same)), same, atol=1e-6)
    abar = prior.alphas_cumprod
    assert abar.shape == (1000,) and abar[0].item() == pytest.approx(1 - 0.00085, abs=1e-6)
    assert abar[-1].item() == pytest.approx(0.0047, abs=2e-4)  # SD's scaled-linear schedule


def test_cache_reuse_and_bad_prompt(tmp_path):
    a = ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path)
    assert a.cache_path.exists()
    b = ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path)
    assert torch.equal(a.images, b.images)
    c = ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path, seed=1)
    assert c.cache_path != a.cache_path
    with pytest.raises(ToyPromptError):
        ToyPromptProcessor(ToyPromptProcessorConfig(prompt="a hamburger"))
    with pytest.raises(ToyPromptError):
        tiny_prior(tmp_path, uncond_prompts=["a red banana"])


def test_a_cold_bank_says_it_is_rendering(tmp_path, capsys):
    ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path)
    told = capsys.readouterr().err.splitlines()  # stderr is captured, not a terminal: plain lines
    assert told[0].startswith("rendering the exemplar bank of 'a red cube'") and told[0].endswith(f"(3 views; once: cached in {tmp_path}) ...")
    assert "3/3 views" in told[-1] and len(told) == 2, told
    ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path)  # warm: loaded, nothing to say
    ExemplarBank("a red cube", 3, 8, 8, cache_dir=tmp_path, seed=2, show_progress=False)  # its caller shows the bar
    assert capsys.readouterr().err == ""
