"""The exact view-conditioned toy prior: the posterior over scenes and the mixture-of-mixtures denoiser."""
import logging
import math

import pytest
import torch

from framework.cameras import orbit_c2w
from models.priors.toy.exact_view_prior import ToyExactViewPrior, ToyExactViewPriorConfig
from models.priors.toy.render import render_scene
from models.priors.toy.scenes import COLOURS, parse_prompt

RES = 16
CANDIDATES = ["a red cube", "a red cylinder", "a blue cube", "a green sphere", "a yellow torus",
              "a red cone on top of a blue cube", "a purple cone"]  # fmt: skip
REF = (20.0, 0.0, 1.6, 40.0)  # elevation, azimuth (deg), distance, fovy (deg)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One exemplar cache for the module: banks and candidate traces are rendered once."""
    return tmp_path_factory.mktemp("toy-cache")


def make_prior(cache, **kw):
    args = dict(resolution=RES, candidate_prompts=CANDIDATES, n_exemplars=48, k_nearest=4, n_uncond_exemplars=16,
                k_nearest_uncond=2, supersample=1, cache_dir=str(cache))  # fmt: skip
    return ToyExactViewPrior(ToyExactViewPriorConfig(**{**args, **kw}))


def render(prompt, elevation, azimuth, distance, fovy_deg, res=RES):
    """The true toy render (1, res, res, 3)."""
    c2w = orbit_c2w(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([distance]))
    return render_scene(parse_prompt(prompt), c2w, torch.tensor([math.radians(fovy_deg)]), res, res)["rgb"].clamp(0, 1)


def camera_batch(elevation, azimuth, distance, fovy_deg):
    return {"elevation": torch.tensor([elevation]), "azimuth": torch.tensor([azimuth]),
            "distance": torch.tensor([distance]), "fovy": torch.tensor([math.radians(fovy_deg)])}  # fmt: skip


def silhouette_iou(a, b):
    """a, b rgb (..., 3) over white: IoU of their non-white pixels."""
    ma, mb = a.min(-1).values < 0.95, b.min(-1).values < 0.95
    return ((ma & mb).sum() / (ma | mb).sum().clamp(min=1)).item()


def test_posterior_picks_the_scene_of_the_image(cache):
    prior = make_prior(cache)
    for scene in ("a red cone on top of a blue cube", "a red cylinder", "a red cube"):
        cond = prior.make_condition(render(scene, *REF), *REF)
        assert cond["prompts"][0] == scene and cond["probs"][0] > 0.999, (scene, cond["prompts"], cond["probs"])
        assert cond["dropped_mass"] < 1e-3 and torch.allclose(cond["probs"].sum(), torch.tensor(1.0))
    # a reference at twice the resolution is box-filtered down to the prior's: same answer
    cond = prior.make_condition(render("a red cylinder", *REF, res=2 * RES), *REF)
    assert cond["prompts"][0] == "a red cylinder" and cond["probs"][0] > 0.999


def test_hidden_bottom_splits_the_posterior(cache):
    """From above, the top cube hides the bottom one: its colour is unknown, each of the six equally likely."""
    stacks = [f"a red cube on top of a {c} cube" for c in COLOURS]
    prior = make_prior(cache, candidate_prompts=stacks + ["a red cube", "a red cylinder on top of a red cube"], n_exemplars=8)
    top = (89.0, 0.0, 1.6, 40.0)
    cond = prior.make_condition(render(stacks[2], *top), *top)
    assert sorted(cond["prompts"]) == sorted(stacks)
    assert torch.allclose(cond["probs"], torch.full((6,), 1 / 6), atol=1e-3)


def test_reference_camera_small_t_recovers_the_reference(cache):
    prior = make_prior(cache)
    ref = render("a red cone on top of a blue cube", *REF)
    prior.set_condition_image(ref, *REF[:3])  # fovy: the config's reference_fovy_deg (40)
    x_ref = prior.encode(ref)
    t = torch.tensor([20])
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x_ref + (1 - abar).sqrt() * torch.randn_like(x_ref)
    x0 = prior.predict_x0(x_t, t, None, camera_batch(*REF))
    assert (prior.decode(x0) - ref).abs().max() < 1e-3
    # without the reference view in the pool, the nearest bank views are not the reference view
    x0_bank = make_prior(cache, include_reference_view=False).predict_x0(x_t, t, prior.cond, camera_batch(*REF))
    assert (prior.decode(x0_bank) - ref).abs().max() > 0.1


def test_novel_view_resembles_the_truth_better_than_unconditional(cache):
    prior = make_prior(cache, n_exemplars=192)  # the estimate is as close as the bank's nearest views
    scene = "a red cone on top of a blue cube"
    prior.set_condition_image(render(scene, *REF), *REF[:3], fovy_deg=REF[3])
    target = (45.0, 120.0, 1.5, 40.0)
    truth = render(scene, *target)
    torch.manual_seed(0)
    x_t = torch.randn(4, 3, RES, RES)
    t = torch.full((4,), 800)
    batch = {k: v.expand(4) for k, v in camera_batch(*target).items()}
    x0_c = prior.decode(prior.predict_x0(x_t, t, None, batch))
    x0_u = prior.decode(prior.predict_x0(x_t, t, None, batch, uncond=True))
    iou_c = [silhouette_iou(x, truth[0]) for x in x0_c]
    iou_u = [silhouette_iou(x, truth[0]) for x in x0_u]
    assert min(iou_c) > 0.7 and max(iou_u) < 0.5, (iou_c, iou_u)  # 16^2 silhouettes are coarse
    assert (x0_c - truth).abs().mean() < (x0_u - truth).abs().mean()


def test_uncond_differs_and_no_exemplars_in_state_dict(cache):
    prior = make_prior(cache)
    prior.set_condition_image(render("a red cube", *REF), *REF[:3])
    x_t = torch.randn(2, 3, RES, RES)
    t = torch.tensor([300, 600])
    batch = {k: v.expand(2) for k, v in camera_batch(30.0, -60.0, 1.6, 40.0).items()}
    eps_c, eps_u = prior.predict_noise(x_t, t, None, batch, need_uncond=True)
    assert eps_c.shape == eps_u.shape == (2, 3, RES, RES)
    assert (eps_c - eps_u).abs().mean() > 0.05
    assert prior.predict_noise(x_t, t, None, batch, need_uncond=False)[1] is None
    assert list(prior.state_dict()) == []  # banks, renders and the posterior are data, never checkpointed


def test_mixture_of_mixtures_matches_the_closed_form(cache):
    """With a broad likelihood the posterior keeps several scenes; x0_hat is the softmax over all their
    exemplars (bank views and reference view) with log weights log p(s | y) - log(pool size)."""
    prior = make_prior(cache, pixel_sigma=6.0, k_nearest=0, min_posterior=0.0, max_scenes=3)
    prior.set_condition_image(render("a blue cube", *REF), *REF[:3])
    cond = prior.cond
    assert len(cond["prompts"]) == 3 and cond["prompts"][0] == "a blue cube" and cond["probs"].min() > 0.05
    x_t = torch.randn(1, 3, RES, RES)
    t = torch.tensor([500])
    abar = prior.alphas_cumprod[500].double()
    got = prior.predict_x0(x_t, t, None, camera_batch(0.0, 90.0, 1.6, 40.0)).double().reshape(-1)
    ex, log_w = [], []
    for s, p in enumerate(cond["prompts"]):
        views = torch.cat([prior.scenes.bank(p).images, cond["views"][s : s + 1]]).double() * 2 - 1
        ex.append(views.permute(0, 3, 1, 2).reshape(views.shape[0], -1))
        log_w.append(torch.full((views.shape[0],), math.log(cond["probs"][s]) - math.log(views.shape[0]), dtype=torch.float64))
    ex, log_w = torch.cat(ex), torch.cat(log_w)
    logits = log_w - (x_t.double().reshape(-1) - abar.sqrt() * ex).square().sum(-1) / (2 * (1 - abar))
    want = (torch.softmax(logits, 0)[:, None] * ex).sum(0)
    assert torch.allclose(got, want, atol=1e-4)


def test_relative_pose_override_equals_the_batch_cameras(cache):
    prior = make_prior(cache)
    prior.set_condition_image(render("a red cylinder", *REF), *REF[:3])
    target = (35.0, -75.0, 1.45, 40.0)
    d_az = math.radians(target[1] - REF[1])
    pose = torch.tensor([[math.radians(REF[0] - target[0]), math.sin(d_az), math.cos(d_az), target[2] - REF[2]]])
    x_t, t = torch.randn(1, 3, RES, RES), torch.tensor([400])
    by_batch = prior.predict_noise(x_t, t, None, camera_batch(*target), True)
    by_pose = prior.predict_noise(x_t, t, {**prior.cond, "T": pose}, {"fovy": torch.tensor([math.radians(40.0)])}, True)
    assert torch.allclose(by_batch[0], by_pose[0], atol=1e-5) and torch.allclose(by_batch[1], by_pose[1], atol=1e-5)
    by_rgb = prior.predict_noise(x_t, t, {"rgb": render("a red cylinder", *REF), "elevation": REF[0], "azimuth": REF[1],
                                          "distance": REF[2]}, camera_batch(*target), False)  # fmt: skip
    assert torch.allclose(by_batch[0], by_rgb[0], atol=1e-5)


def test_bad_inputs(cache, caplog):
    prior = make_prior(cache)
    for shape in [(RES, RES, 3), (1, RES, RES, 4), (1, RES, RES + 2, 3), (2, RES, RES, 3)]:
        with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
            prior.set_condition_image(torch.ones(shape), *REF[:3])
    with pytest.raises(ValueError, match="set_condition_image"):
        prior.predict_noise(torch.zeros(1, 3, RES, RES), torch.tensor([5]), None, camera_batch(*REF), False)
    # a scene outside the candidates: still a posterior (the softmax), with a warning naming the best candidates
    with caplog.at_level(logging.WARNING, logger="models.priors.toy.exact_view_prior"):
        prior.set_condition_image(render("a orange torus on top of a green sphere", *REF), *REF[:3])
    assert "no toy scene explains" in caplog.text and "log-likelihood" in caplog.text
    assert torch.allclose(prior.cond["probs"].sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="missing"):
        prior.predict_noise(torch.zeros(1, 3, RES, RES), torch.tensor([5]), None, {}, False)


def test_a_nan_pixel_in_a_bank_does_not_poison_the_estimate(cache):
    prior = make_prior(cache, n_exemplars=8, k_nearest=0)
    prior.set_condition_image(render("a purple cone", *REF), *REF[:3])
    bank = prior.scenes.bank("a purple cone")
    bank.images = bank.images.clone()
    bank.images[3, 5, 5] = float("nan")  # what render_scene gives a ray stopping exactly on the cone's side
    x0 = prior.predict_x0(torch.randn(1, 3, RES, RES), torch.tensor([500]), None, camera_batch(*REF))
    assert torch.isfinite(x0).all()


def test_render_mode_is_exact_at_any_target_camera(cache):
    """target_views='render': the view model is the render at the target camera itself, so with the
    posterior on one scene x0_hat is that render at any noise level."""
    prior = make_prior(cache, target_views="render")
    scene = "a red cone on top of a blue cube"
    prior.set_condition_image(render(scene, *REF), *REF[:3])
    target = (45.0, 120.0, 1.5, 36.0)
    x_t = torch.randn(2, 3, RES, RES)
    t = torch.tensor([900, 50])
    batch = {k: v.expand(2) for k, v in camera_batch(*target).items()}
    x0 = prior.decode(prior.predict_x0(x_t, t, None, batch))
    assert torch.allclose(x0, render(scene, *target).expand(2, -1, -1, -1), atol=1e-5)
    eps_c, eps_u = prior.predict_noise(x_t, t, None, batch, need_uncond=True)
    assert (eps_c - eps_u).abs().mean() > 0.05
    x0_u = prior.decode(prior.predict_x0(x_t, t, None, batch, uncond=True))  # a mixture of the single shapes there
    singles = [p for p in CANDIDATES if " on top of " not in p]
    assert prior.uncond_prompts == singles
    assert silhouette_iou(x0_u[1], render(scene, *target)[0]) < 0.9
    with pytest.raises(ValueError, match="target_views"):
        make_prior(cache, target_views="nearest")
