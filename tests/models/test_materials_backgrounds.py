"""Materials (toy-world shading, threestudio's shading augmentation) and backgrounds."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.backgrounds.neural_env_map import NeuralEnvironmentMapBackground, NeuralEnvironmentMapBackgroundConfig, spherical_harmonics
from models.backgrounds.solid_color import SolidColorBackground, SolidColorBackgroundConfig
from models.materials.diffuse_with_point_light import DiffuseWithPointLight, DiffuseWithPointLightConfig
from models.materials.no_material import NoMaterial, NoMaterialConfig


def surface(n: int = 256):
    torch.manual_seed(0)
    normal = F.normalize(torch.randn(n, 3), dim=-1)
    positions = normal * 0.45  # a sphere of radius 0.45
    albedo = torch.rand(n, 3) * 0.9 + 0.05
    features = torch.logit(albedo)
    camera = torch.tensor([2.0, 0.5, 0.8]).expand(n, 3)
    return normal, positions, albedo, features, camera


def toy_material(**kw) -> DiffuseWithPointLight:
    return DiffuseWithPointLight(DiffuseWithPointLightConfig(ambient_light_color=[0.4] * 3, diffuse_light_color=[0.6] * 3, **kw))


def test_reproduces_toy_world_shading_with_head_light():
    normal, positions, albedo, features, camera = surface()
    mat = toy_material().eval()
    viewdirs = F.normalize(positions - camera, dim=-1)
    rgb = mat(features, viewdirs, positions, light_positions=camera, shading_normal=normal)
    v = F.normalize(camera - positions, dim=-1)
    expected = albedo * (0.4 + 0.6 * (normal * v).sum(-1, keepdim=True).clamp(min=0))
    assert torch.allclose(rgb, expected, atol=1e-6)
    assert (normal * v).sum(-1).min() < 0  # back-facing points are covered: ambient only there


def test_albedo_only_warm_up_then_augmentation():
    normal, positions, albedo, features, camera = surface(16)
    args = (features, None, positions, camera, normal)
    mat = toy_material(ambient_only_steps=100, diffuse_prob=1.0, textureless_prob=0.0).train()
    mat.update_step(99)
    assert torch.allclose(mat(*args), albedo, atol=1e-6)
    mat.update_step(100)
    lambert = mat(*args)
    assert not torch.allclose(lambert, albedo, atol=1e-3)
    mat.eval()
    mat.update_step(0)  # evaluation shades even during the warm-up
    assert torch.allclose(mat(*args), lambert, atol=1e-6)
    textureless = toy_material(ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=1.0).train()
    white = textureless(*args)
    assert torch.allclose(white, lambert / albedo, atol=1e-5)  # the shading of a white albedo
    never_diffuse = toy_material(ambient_only_steps=0, diffuse_prob=0.0).train()
    assert torch.allclose(never_diffuse(*args), albedo, atol=1e-6)


def test_no_material_is_activated_features():
    feats = torch.randn(10, 3)
    mat = NoMaterial(NoMaterialConfig())
    assert torch.allclose(mat(feats, None, None, None), torch.sigmoid(feats))
    assert not mat.requires_normal and DiffuseWithPointLight.requires_normal


def test_solid_background():
    bg = SolidColorBackground(SolidColorBackgroundConfig(color=[0.1, 0.2, 0.3], learned=True))
    out = bg(torch.randn(2, 4, 5, 3))
    assert out.shape == (2, 4, 5, 3) and torch.allclose(out[1, 3, 4], torch.tensor([0.1, 0.2, 0.3]))
    out.sum().backward()
    assert bg.color.grad is not None


def test_neural_env_map_shapes_eval_colour_and_random_aug():
    dirs = F.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    bg = NeuralEnvironmentMapBackground(NeuralEnvironmentMapBackgroundConfig()).train()
    out = bg(dirs)
    assert out.shape == (2, 4, 5, 3) and out.min() >= 0 and out.max() <= 1
    out.sum().backward()
    assert all(p.grad is not None for p in bg.parameters())
    bg.eval()
    assert torch.allclose(bg(dirs), bg(dirs))  # deterministic outside training
    white = NeuralEnvironmentMapBackground(NeuralEnvironmentMapBackgroundConfig(eval_color=[1.0, 1.0, 1.0])).eval()
    assert torch.equal(white(dirs), torch.ones(2, 4, 5, 3))
    aug = NeuralEnvironmentMapBackground(NeuralEnvironmentMapBackgroundConfig(random_aug=True, random_aug_prob=1.0)).train()
    out = aug(dirs)
    assert torch.allclose(out, out[:, :1, :1].expand_as(out))  # one colour per image


def test_spherical_harmonics_are_orthonormal():
    torch.manual_seed(0)
    d = F.normalize(torch.randn(400_000, 3, dtype=torch.float64), dim=-1)
    y = spherical_harmonics(d, 4)
    gram = (y.T @ y) / d.shape[0] * 4 * math.pi
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)


def test_ambient_ratio_range_splits_ambient_and_diffuse():
    import random

    import pytest

    from framework.config import ConfigError

    normal, positions, albedo, features, camera = surface(32)
    args = (features, None, positions, camera, normal)
    mat = toy_material(ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=0.0, ambient_ratio_range=[0.5, 1.0]).train()
    random.seed(3)
    rgb = mat(*args)
    random.seed(3)
    random.random(), random.random()  # the two shading draws (diffuse_prob, textureless_prob)
    r = random.uniform(0.5, 1.0)
    cos = (normal * F.normalize(camera - positions, dim=-1)).sum(-1, keepdim=True).clamp(min=0)
    assert torch.allclose(rgb, albedo * (r + (1 - r) * cos), atol=1e-6)
    assert torch.allclose(mat.eval()(*args), albedo * (0.4 + 0.6 * cos), atol=1e-6)  # evaluation: the configured lights
    with pytest.raises(ConfigError, match="ambient_ratio_range"):
        toy_material(ambient_ratio_range=[0.8, 0.5])


def test_a_forced_shading_overrides_the_training_choice():
    normal, positions, albedo, features, camera = surface(16)
    mat = toy_material(ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=0.0).train()
    assert torch.allclose(mat(features, None, positions, camera, normal, shading="albedo"), albedo, atol=1e-6)
