"""The environment the README's set-up creates must not contain torchvision (nor timm / open-clip)."""
import importlib.util

import pytest


@pytest.mark.parametrize("name", ["torchvision", "timm", "open_clip"])
def test_forbidden_package_absent(name):
    assert importlib.util.find_spec(name) is None, f"{name} is installed; it breaks diffusers here"


def test_diffusers_imports():
    import diffusers  # noqa: F401
    from diffusers import DDPMScheduler

    assert DDPMScheduler().config.num_train_timesteps == 1000
