"""Checkpoints written atomically, and checked when a run loads one (`resume=`, `weights=`).

Writing: `AtomicCheckpointIO` is Lightning's TorchCheckpointIO with the file written to a temporary
name in the checkpoint's own folder, fsynced, then renamed over the target (a rename within one
file system is atomic), so a kill while saving leaves the previous `last.ckpt` whole. (Lightning's
own `_atomic_save` stages the file in the system temp folder, possibly another file system, where the
final move is a copy, and does not fsync.)

Reading: `read_checkpoint` turns what torch.load would raise for a file that is not a checkpoint
(empty, an image, truncated, not this project's) into a UserError naming the file, what it is, and
the newest intact checkpoint beside it. `check_method` compares the run that wrote it (stored in
the checkpoint by `run_record`, or read from its run directory's configs/parsed.yaml) with this one;
`compare_state` says which tensors of the model a checkpoint fills, so a checkpoint of another
shape is refused with the config keys that differ, and `weights=` that fills too little is an error.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError

RUN_RECORD_KEY = "toy3d_run"
SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
}


class CheckpointError(UserError):
    """A checkpoint file that cannot serve this run; the message names the file and what to use instead."""


# ---- writing -----------------------------------------------------------------------------------


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, Path(path))


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint stores of the run that wrote it (read back by check_method)."""
    return {"name": cfg.get("name"), "system": OmegaConf.select(cfg, "system._target_"),
            "config": OmegaConf.to_container(cfg, resolve=True)}


# ---- reading -----------------------------------------------------------------------------------


def what_the_file_is(path: Path) -> str | None:
    """A short description when the file is plainly not a checkpoint, else None."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(512)
    for signature, kind in SIGNATURES.items():
        if head.startswith(signature):
            return f"is {kind}, not a checkpoint"
    if head.startswith(b"PK\x03\x04") and not intact_zip(path):
        return f"is truncated or corrupted ({size} bytes; a save was interrupted or the copy is incomplete)"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "is a text file, not a checkpoint"
    return None


def intact_zip(path: Path) -> bool:
    """torch.save's zip container, every member's CRC checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def is_training_checkpoint(path: Path) -> bool:
    """Intact, and a Lightning checkpoint (memory-mapped: the tensors are not read)."""
    if not intact_zip(path):
        return False
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return False
    return isinstance(checkpoint, dict) and "state_dict" in checkpoint


def newest_intact_beside(path: Path) -> str:
    others = sorted((p for p in path.parent.glob("*.ckpt") if p.resolve() != path.resolve()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        if is_training_checkpoint(other):
            return f"The newest intact checkpoint beside it is {other}."
    return f"No intact checkpoint is beside it in {path.parent}."


def read_checkpoint(path: str | os.PathLike, key: str) -> dict[str, Any]:
    """torch.load of a Lightning checkpoint of this project, or a CheckpointError saying what the file is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}={path}: no such checkpoint file (runs keep theirs in outputs/<name>/<run>/ckpts/)")
    problem = what_the_file_is(path)
    checkpoint: Any = None
    if problem is None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch's messages for a bad file vary by version and damage
            problem = f"cannot be read as a checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if problem is None and not (isinstance(checkpoint, dict) and "state_dict" in checkpoint):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        problem = f"is a PyTorch file but not a training checkpoint (no 'state_dict'; it holds {found})"
    if problem is not None:
        raise CheckpointError(f"{key}={path} {problem}. {newest_intact_beside(path)}")
    return checkpoint


def stored_run(checkpoint: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The run that wrote a checkpoint: its record inside, else its run directory's parsed config."""
    if RUN_RECORD_KEY in checkpoint:
        return checkpoint[RUN_RECORD_KEY]
    parsed = path.parent.parent / "configs" / "parsed.yaml"
    if parsed.is_file():
        config = OmegaConf.to_container(OmegaConf.load(parsed), resolve=False)
        return {"name": config.get("name"), "system": (config.get("system") or {}).get("_target_"), "config": config}
    return None


def check_method(checkpoint: dict[str, Any], path: Path, key: str, cfg: DictConfig, allow_other: bool = False) -> None:
    """Refuse a checkpoint written by another method (unless `allow_other`, partial weights on purpose)."""
    record = stored_run(checkpoint, path)
    if record is None or allow_other:
        return
    here = OmegaConf.select(cfg, "system._target_")
    if record.get("system") and record["system"] != here:
        fix = "" if key != "weights" else " To take the parts the two share on purpose, add partial_weights=true."
        raise CheckpointError(
            f"{key}={path} is a checkpoint of a '{record.get('name')}' run (system {record['system']}), "
            f"not of this '{cfg.get('name')}' run (system {here}). Pass a checkpoint of a {cfg.get('name')} run.{fix}"
        )


@dataclass
class StateComparison:
    """Which of the model's tensors a checkpoint fills (names are state-dict keys)."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, in file, in model)
    unexpected: list[str] = field(default_factory=list)
    matched_values: int = 0
    model_values: int = 0

    @property
    def complete(self) -> bool:
        return not (self.missing or self.wrong_shape or self.unexpected)

    def summary(self) -> str:
        total = len(self.matched) + len(self.missing) + len(self.wrong_shape)
        share = self.matched_values / max(self.model_values, 1)
        parts = [f"it fills {len(self.matched)} of the model's {total} tensors ({share:.0%} of its values)"]
        if self.wrong_shape:
            parts.append("shape differs for " + ", ".join(f"{n} (file {tuple(a)}, model {tuple(b)})" for n, a, b in self.wrong_shape[:3]))
        if self.missing:
            parts.append("missing " + ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else ""))
        if self.unexpected:
            parts.append("not in the model " + ", ".join(self.unexpected[:3]) + (" ..." if len(self.unexpected) > 3 else ""))
        return "; ".join(parts)


def saved_state_of(system: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a checkpoint of `system` holds: its own on_save_checkpoint decides (frozen priors are left out)."""
    checkpoint = {"state_dict": dict(system.state_dict())}
    if hasattr(system, "on_save_checkpoint"):
        system.on_save_checkpoint(checkpoint)
    return checkpoint["state_dict"]


def compare_state(system: torch.nn.Module, state: dict[str, Any]) -> StateComparison:
    result = StateComparison()
    expected = saved_state_of(system)
    for name, tensor in expected.items():
        result.model_values += tensor.numel()
        if name not in state:
            result.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            result.wrong_shape.append((name, tuple(state[name].shape), tuple(tensor.shape)))
        else:
            result.matched.append(name)
            result.matched_values += tensor.numel()
    result.unexpected = [n for n in state if n not in expected]
    return result


def config_differences(checkpoint: dict[str, Any], path: Path, cfg: DictConfig, limit: int = 6) -> str:
    """The system.* keys whose values differ between the checkpoint's run and this one."""
    record = stored_run(checkpoint, path)
    if record is None or "config" not in record:
        return ""
    theirs = flatten(record["config"].get("system", {}), "system.")
    ours = flatten(OmegaConf.to_container(cfg.system, resolve=True), "system.")
    diffs = [f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(set(theirs) | set(ours))
             if theirs.get(k) != ours.get(k) and not k.endswith(".prompt")]
    if not diffs:
        return ""
    return " Its run differs from this one in " + "; ".join(diffs[:limit]) + (" ..." if len(diffs) > limit else "") + "."


def flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def check_fits(system: torch.nn.Module, checkpoint: dict[str, Any], path: Path, key: str, cfg: DictConfig,
               partial: bool = False) -> StateComparison:
    """Refuse a checkpoint that does not fill the model exactly (or, with `partial`, fills none of it)."""
    comparison = compare_state(system, checkpoint["state_dict"])
    if comparison.complete or (partial and comparison.matched):
        return comparison
    fix = " Add partial_weights=true to load only the tensors that fit." if key == "weights" and not partial else ""
    raise CheckpointError(
        f"{key}={path} does not fit this model: {comparison.summary()}.{config_differences(checkpoint, path, cfg)}"
        f" Use a checkpoint of a run with this config.{fix}"
    )
