"""Run a method from its Hydra config.

    python launch.py --config-name dreamfusion-toy system.prompt="a blue torus"
    python launch.py --config-name dreamfusion-toy mode=export resume=outputs/.../ckpts/last.ckpt
    python launch.py --config-name dreamfusion-toy -m system.prompt="a red cube","a green cone"

The run directory outputs/<name>/<tag>@<timestamp>/ is Hydra's output directory (configs/base.yaml).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

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
    """The default run tag: the prompt as a directory name, or for image-to-3D the picture's file name
    (data.image_path's stem). Reads them without resolving, so a missing one is reported by name in
    `run` instead of failing here."""
    system, data = _root_._get_node("system"), _root_._get_node("data")
    if system is not None and "prompt" in system:
        return "no-prompt" if OmegaConf.is_missing(system, "prompt") else slug(system.prompt)
    if data is not None and "image_path" in data and not OmegaConf.is_missing(data, "image_path"):
        return slug(Path(str(data.image_path)).stem)
    return "no-prompt"


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


def check_output_root(argv: list[str]) -> None:
    """Hydra creates the run directory before any of our code runs; check its place first so an
    unwritable one is a clear error rather than a traceback."""
    wanted = [a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    for target in wanted or ["outputs"]:
        path = Path(target).absolute()
        while not path.exists():
            path = path.parent
        if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
            sys.exit(
                f"error: cannot create the run directory {target}: {path} is not a writable directory. "
                "Run from a writable folder or choose one with hydra.run.dir=<dir>."
            )


if __name__ == "__main__":
    check_output_root(sys.argv[1:])
    main()
