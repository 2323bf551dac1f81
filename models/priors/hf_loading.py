"""Loading Hugging Face model parts offline, with one clear error when they are missing.

Every real prior and text encoder (Stable Diffusion, DeepFloyd IF, their CLIP / T5 text
encoders) loads through `load_part`: diffusers' / transformers' own
`from_pretrained(id_or_local_dir, subfolder=...)`, never downloading implicitly. The project runs
offline, so absent weights stop the run within seconds with a `MissingWeightsError` naming the
model, where it looked and how to provide it (DESIGN.md, 'Priors'); never a hang, a raw traceback
or a silent fallback to another prior.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from framework.config import UserError
from framework.progress import announce


class MissingWeightsError(UserError):
    """The model's weights are neither in the local folder nor in the Hugging Face cache."""


def offline(local_files_only: bool) -> bool:
    """True when the hub must not be contacted: the config asks so, or HF_HUB_OFFLINE is set."""
    # Read the env at call time: huggingface_hub.constants caches it at import.
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(local_files_only) or env


def looks_like_path(name: str) -> bool:
    """A hub id is 'org/name' (at most one '/'); anything else that names a file system location is a path."""
    return (
        os.path.exists(name)
        or os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.strip("/").count("/") > 1
    )


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_local(name: str) -> str:
    """A folder path made absolute: relative to the working directory, or else to the project root
    (so configs can name the priors shipped in the repository, e.g. models/priors/toy/weights/...)."""
    path = Path(os.path.expanduser(name))
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        path = PROJECT_ROOT / path
    return os.path.abspath(path)


def missing_message(what: str, name: str, is_local: bool, subfolders: list[str], config_key: str, detail: str) -> str:
    """The text of a MissingWeightsError: which model, where we looked, the two ways to fix it."""
    from huggingface_hub import constants

    if is_local:
        where = f"the local folder {name!r}"
        fix = "fill it once with network access (`hf download <model id> --local-dir <folder>`)"
    else:
        where = f"the Hugging Face cache {constants.HF_HUB_CACHE!r} (offline, local files only)"
        fix = f"download them once with network access: `hf download {name}` (gated models need `hf auth login` first)"
    return (
        f"{what} weights for {name!r} were not found in {where}.\n"
        f"Fix: {fix}; or point to a local folder holding {', '.join(f'{s}/' for s in subfolders)} with "
        f"`{config_key}=/path/to/folder`.\n"
        f"(underlying error: {detail})"
    )


def load_errors() -> tuple[type[BaseException], ...]:
    """The exceptions diffusers / transformers / huggingface_hub raise for absent weights (OSError
    covers EnvironmentError and requests' errors; HFValidationError is a ValueError for malformed ids)."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    errors: list[type[BaseException]] = [OSError, LocalEntryNotFoundError, EntryNotFoundError, HFValidationError]
    try:
        import httpx  # huggingface_hub >= 1.0 transport; its connection errors are not OSErrors

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def absent_parts(folder: str, subfolders: list[str]) -> list[str]:
    """The entries of `subfolders` with no folder in `folder`; an entry 'a (or b)' is either of two layouts."""
    absent = []
    for entry in subfolders:
        options = [entry.split(" (or ")[0], *re.findall(r"\(or ([^)]+)\)", entry)]
        if not any(os.path.isdir(os.path.join(folder, option)) for option in options):
            absent.append(entry)
    return absent


class ModelSource:
    """Where one model's parts come from: a hub id (looked up in the cache) or a local folder.

    `what` ("Stable Diffusion", "DeepFloyd IF", ...) and `config_key` (the override that points
    elsewhere) make the error message specific; `subfolders` lists the parts a folder must hold.
    """

    def __init__(self, name: str, what: str, config_key: str, subfolders: list[str], local_files_only: bool = True):
        self.name = str(name)
        self.what = what
        self.config_key = config_key
        self.subfolders = list(subfolders)
        self.is_local = looks_like_path(self.name)
        self.local_files_only = offline(local_files_only)
        if self.is_local:
            self.name = resolve_local(self.name)
            if not os.path.isdir(self.name):
                raise self.missing("no such directory")
            absent = absent_parts(self.name, self.subfolders)
            if absent:  # before from_pretrained, whose errors for a part-filled folder mislead
                raise self.missing(f"the folder has no {', '.join(a + '/' for a in absent)}")

    def missing(self, detail: str) -> MissingWeightsError:
        return MissingWeightsError(
            missing_message(self.what, self.name, self.is_local, self.subfolders, self.config_key, detail)
        )

    def load(self, cls: Any, subfolder: str, **kwargs: Any) -> Any:
        """cls.from_pretrained(name, subfolder=...), offline; absent files -> MissingWeightsError. A network's
        weights (an nn.Module class: a UNet, a VAE, a text encoder) say they are loading, and how long it took;
        a scheduler's or tokenizer's files load silently."""
        weights = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
        loading = announce(f"loading {self.what} {subfolder}/ from {self.name}") if weights else contextlib.nullcontext()
        try:
            with loading:
                return cls.from_pretrained(self.name, subfolder=subfolder, local_files_only=self.local_files_only, **kwargs)
        except load_errors() as err:
            raise self.missing(f"{subfolder}/: {type(err).__name__}: {err}") from err
