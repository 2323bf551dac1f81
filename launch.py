"""Run a method from its Hydra config.

    python launch.py --config-name dreamfusion-toy system.prompt="a blue torus"
    python launch.py --config-name dreamfusion-toy mode=export resume=outputs/.../ckpts/last.ckpt
    python launch.py --config-name dreamfusion-toy -m system.prompt="a red cube","a green cone"

The run directory outputs/<name>/<tag>@<timestamp>/ is Hydra's output directory (configs/base.yaml).
"""
from __future__ import annotations

import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from framework.config import UserError
from framework.runner import run
from systems.schemas import register_schemas


def slug(text: str) -> str:
    """A prompt as a directory name: 'a red cube.' -> 'a_red_cube'."""
    return re.sub(r"[^A-Za-z0-9@,.+-]+", "_", str(text)).strip("_.") or "run"


def prompt_tag(*, _root_: DictConfig) -> str:
    """The default run tag: the prompt as a directory name. Reads the prompt without resolving
    it, so a missing prompt is reported by name in `run` instead of failing here."""
    system = _root_._get_node("system")
    if system is None or OmegaConf.is_missing(system, "prompt"):
        return "no-prompt"
    return slug(system.prompt)


register_schemas()
if not OmegaConf.has_resolver("slug"):
    OmegaConf.register_new_resolver("slug", slug)
    OmegaConf.register_new_resolver("prompt_tag", prompt_tag)


@hydra.main(config_path="configs", config_name="dreamfusion-toy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, HydraConfig.get().runtime.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
