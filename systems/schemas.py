"""Every component's typed config, stored in Hydra's ConfigStore as `schema/<group>/<name>`.

Each YAML option in configs/ extends its schema (`- /schema/<group>/<name>@_here_`), so Hydra
rejects unknown keys and wrong types while composing. This list is the one place that names
the schemas; it is explicit on purpose (no import-time registry, no reflection).
"""
from __future__ import annotations

from hydra.core.config_store import ConfigStore

from framework.data.random_camera import RandomCameraDataConfig
from framework.data.single_image import SingleImageDataConfig
from framework.run_config import RunConfig
from models.backgrounds.neural_env_map import NeuralEnvironmentMapBackgroundConfig
from models.backgrounds.solid_color import SolidColorBackgroundConfig
from models.backgrounds.textured import TexturedBackgroundConfig
from models.geometry.dmtet import DMTetConfig
from models.geometry.implicit_volume import ImplicitVolumeConfig
from models.geometry.volume_grid import VolumeGridConfig
from models.guidance.sds import SDSGuidanceConfig
from models.guidance.sjc import SJCGuidanceConfig
from models.guidance.vsd import VSDGuidanceConfig
from models.guidance.zero123 import Zero123GuidanceConfig
from models.materials.diffuse_with_point_light import DiffuseWithPointLightConfig
from models.materials.no_material import NoMaterialConfig
from models.priors.deepfloyd_if import DeepFloydIFPriorConfig
from models.priors.stable_diffusion import StableDiffusionPriorConfig
from models.priors.toy.exact_score import ToyExactScorePriorConfig
from models.priors.toy.exact_view_prior import ToyExactViewPriorConfig
from models.priors.toy.scoring import ToySceneEvaluatorConfig
from models.prompt_processors.text import DeepFloydIFPromptProcessorConfig, StableDiffusionPromptProcessorConfig
from models.prompt_processors.toy import ToyPromptProcessorConfig
from models.renderers.mesh_renderer import MeshRendererConfig
from models.renderers.volume_renderer import VolumeRendererConfig
from systems.dreamfusion import DreamFusionConfig
from systems.magic3d import Magic3DRefineConfig
from systems.prolificdreamer import ProlificDreamerGeometryConfig, ProlificDreamerTextureConfig
from systems.sjc import SJCConfig
from systems.zero123 import Zero123Config
from models.priors.toy.training.train_text_prior import ToyTextPriorTrainingConfig
from models.priors.toy.training.image_data import ToyImagesDataConfig
from models.priors.toy.training.view_pair_data import ToyViewPairsDataConfig
from models.priors.zero123 import Zero123PriorConfig
from models.priors.toy.training.train_view_prior import ToyViewPriorTrainingConfig

SCHEMAS = {
    "run": RunConfig,
    "data/random-camera": RandomCameraDataConfig,
    "data/single-image": SingleImageDataConfig,
    "system/dreamfusion": DreamFusionConfig,
    "geometry/implicit-volume": ImplicitVolumeConfig,
    "material/diffuse-with-point-light": DiffuseWithPointLightConfig,
    "material/no-material": NoMaterialConfig,
    "background/solid-color": SolidColorBackgroundConfig,
    "background/neural-environment-map": NeuralEnvironmentMapBackgroundConfig,
    "renderer/volume": VolumeRendererConfig,
    "prompt_processor/toy": ToyPromptProcessorConfig,
    "prompt_processor/stable-diffusion": StableDiffusionPromptProcessorConfig,
    "prompt_processor/deep-floyd-if": DeepFloydIFPromptProcessorConfig,
    "guidance/sds": SDSGuidanceConfig,
    "prior/toy-exact-score": ToyExactScorePriorConfig,
    "prior/stable-diffusion": StableDiffusionPriorConfig,
    "prior/deep-floyd-if": DeepFloydIFPriorConfig,
    "evaluator/toy": ToySceneEvaluatorConfig,
    "system/sjc": SJCConfig,
    "geometry/volume-grid": VolumeGridConfig,
    "background/textured": TexturedBackgroundConfig,
    "guidance/sjc": SJCGuidanceConfig,
    "guidance/vsd": VSDGuidanceConfig,
    "geometry/tetrahedra-sdf-grid": DMTetConfig,
    "renderer/mesh": MeshRendererConfig,
    "system/magic3d-refine": Magic3DRefineConfig,
    "system/prolificdreamer-geometry": ProlificDreamerGeometryConfig,
    "system/prolificdreamer-texture": ProlificDreamerTextureConfig,
    "data/toy-images": ToyImagesDataConfig,
    "system/train-toy-text-prior": ToyTextPriorTrainingConfig,
    "data/toy-view-pairs": ToyViewPairsDataConfig,
    "system/train-toy-view-prior": ToyViewPriorTrainingConfig,
    "prior/zero123": Zero123PriorConfig,
    "system/zero123": Zero123Config,
    "guidance/zero123": Zero123GuidanceConfig,
    "prior/toy-exact-view": ToyExactViewPriorConfig,
}


def launcher_schemas() -> dict[str, type]:
    """The sweep launchers' own configs (the `sweep` extra), for configs/hydra/launcher/<name>.yaml to extend:
    those files take the plugins' names in hydra/launcher, so the plugins' nodes are stored again here as
    schema/hydra/launcher/<name>. Empty without the plugins. Hydra's plugin scan runs each plugin module
    again (new classes), so it runs first here, and the classes stored are those Hydra uses."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    found: dict[str, type] = {}
    try:
        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

        found["hydra/launcher/joblib"] = JobLibLauncherConf
    except ImportError:
        pass
    try:
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

        found["hydra/launcher/submitit_slurm"] = SlurmQueueConf
    except ImportError:
        pass
    return found


def register_schemas() -> None:
    store = ConfigStore.instance()
    for path, node in {**SCHEMAS, **launcher_schemas()}.items():
        group, _, name = f"schema/{path}".rpartition("/")
        store.store(group=group, name=name, node=node)
