"""Extensions without forking (framework/extensions.py): a package outside the project adds a material
with its YAML option, `_target_` and schema through `hydra.searchpath=[pkg://...]`, and its keys are
checked like a built-in one's. The package is tests/extension_example/toy3d_glossy."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import launch
from framework.config import ConfigError
from framework.errors import EXIT_DONE, EXIT_USER_INPUT
from framework.extensions import package_of, register_extensions, searchpath_packages
from systems.schemas import SCHEMAS
from tests.conftest import TINY_TOY_RUN

EXAMPLE = Path(__file__).resolve().parents[1] / "extension_example"
GLOSSY = ["system/material=glossy", "hydra.searchpath=[pkg://toy3d_glossy.configs]"]


@pytest.fixture
def cli(toy_cache, monkeypatch, capsys):
    """launch.py's command line in this process, with the example package importable -> (exit code, output)."""
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))
    monkeypatch.syspath_prepend(str(EXAMPLE))

    def run(*args: str) -> tuple[int, str]:
        code = launch.cli(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def test_the_packages_a_search_path_names():
    argv = ["system/material=glossy", "hydra.searchpath=[pkg://toy3d_glossy.configs,file:///somewhere/configs]",
            "++hydra.searchpath=[pkg://a.b/configs]"]
    assert searchpath_packages(argv) == ["toy3d_glossy", "a.b"]
    assert package_of("pkg://my_ext") == "my_ext" and package_of("file:///x/configs") is None
    assert searchpath_packages(["system.prompt=a red cube"]) == []


def test_a_run_with_the_extensions_material(cli, tmp_path):
    run_dir = tmp_path / "glossy"
    code, output = cli("--config-name", "dreamfusion-toy", *TINY_TOY_RUN, *GLOSSY, "system.material.shininess=8",
                       f"hydra.run.dir={run_dir}")
    assert code == EXIT_DONE, output[-3000:]
    parsed = OmegaConf.load(run_dir / "configs/parsed.yaml")
    assert parsed.system.material._target_ == "toy3d_glossy.glossy.Glossy"
    assert parsed.system.material.shininess == 8.0 and parsed.system.material.specular == 0.15  # the option's own value
    assert (run_dir / "save/export/model.obj").is_file() and (run_dir / "metrics.json").is_file()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("system.material.shinines=3", "did you mean system.material.shininess"),  # misspelt, as for a built-in
        ("+system.material.shinines=3", "system.material.shinines"),
        ("system.material.shininess=0.5", "system.material.shininess=0.5 is not allowed"),  # its own value rule
        ("system.material.specular=bright", "system.material.specular"),  # its schema's type
    ],
)
def test_the_extensions_keys_are_checked_like_built_in_ones(cli, tmp_path, override, expected):
    code, output = cli("--config-name", "dreamfusion-toy", *GLOSSY, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == EXIT_USER_INPUT, output[-3000:]
    assert expected in output and "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "run").exists()  # refused before the run started


def test_a_package_that_cannot_be_imported(cli, tmp_path):
    code, output = cli("--config-name", "dreamfusion-toy", "hydra.searchpath=[pkg://no_such_extension.configs]",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert code == EXIT_USER_INPUT and "no_such_extension cannot be imported" in output and "PYTHONPATH" in output, output


def test_a_package_that_declares_no_schemas(cli, tmp_path, monkeypatch):
    package = tmp_path / "lib" / "bare_extension"
    (package / "configs").mkdir(parents=True)
    (package / "__init__.py").write_text('"""An extension that forgot SCHEMAS."""\n')
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    code, output = cli("--config-name", "dreamfusion-toy", "hydra.searchpath=[pkg://bare_extension.configs]",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert code == EXIT_USER_INPUT and "declares no SCHEMAS" in output and "Traceback" not in output, output


def test_an_extension_may_not_replace_a_built_in_schema(tmp_path, monkeypatch):
    package = tmp_path / "lib" / "clashing_extension"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from models.materials.no_material import NoMaterialConfig\nSCHEMAS = {'material/no-material': NoMaterialConfig}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    with pytest.raises(ConfigError, match="already this project's schema"):
        register_extensions(["hydra.searchpath=[pkg://clashing_extension.configs]"], SCHEMAS)
