"""A toy3d extension: the glossy material. toy3d stores SCHEMAS in Hydra's ConfigStore (framework/extensions.py)
when the command line names this package's configs: `hydra.searchpath=[pkg://toy3d_glossy.configs]`."""
from toy3d_glossy.glossy import GlossyConfig

SCHEMAS = {"material/glossy": GlossyConfig}
