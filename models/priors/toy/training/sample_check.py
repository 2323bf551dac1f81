"""The automatic check of a trained toy prior's samples against exemplar renders of the same prompt.

A sample of "a red cube" should show a red-shaded object on white whose outline is a cube's outline
from some toy camera. Two figures per prompt, on the samples' foreground (pixels far from the white
background):

The foreground is what differs from the image's own background colour (the median of its border), so
a sample whose background is tinted rather than white is still judged by its object.

- silhouette_iou: for each sample, the best IoU of its foreground mask with the masks of exemplar
  renders of the prompt (many random toy cameras), averaged over samples. Shape-blind noise or a
  blob scores low; a cube seen from an odd angle still finds a matching view.
- colour_error: mean absolute difference (over RGB) between the sample's mean foreground colour and
  the exemplars' mean foreground colour. For single-shape prompts also colour_correct: whether the
  nearest of the six toy colours (each judged by its own exemplars' mean of the same shape) is the
  prompt's colour.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from models.priors.toy.dataset import ToyDatasetConfig, render_views
from models.priors.toy.scenes import COLOURS, parse_prompt

FOREGROUND_THRESHOLD = 0.15  # max |rgb - background| above this is foreground


def background_colour(rgb: Tensor) -> Tensor:
    """rgb (N, H, W, 3) -> (N, 3): the median colour of each image's one-pixel border. Toy renders have
    a white border; a sample may have a tinted one, and its object is what differs from that tint."""
    border = torch.cat([rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]], dim=1)  # (N, 2H + 2W, 3)
    return border.median(dim=1).values


def foreground(rgb: Tensor) -> Tensor:
    """rgb (N, H, W, 3) in [0, 1] -> bool (N, H, W): pixels far from the image's background colour."""
    return (rgb - background_colour(rgb)[:, None, None]).abs().amax(-1) > FOREGROUND_THRESHOLD


def mean_foreground_colour(rgb: Tensor) -> Tensor:
    """rgb (N, H, W, 3) -> (3,) mean colour over every foreground pixel of the N images (white if none)."""
    mask = foreground(rgb)
    if not mask.any():
        return torch.ones(3)
    return rgb[mask].mean(0)


def best_silhouette_iou(samples: Tensor, exemplars: Tensor) -> Tensor:
    """samples (N, H, W, 3), exemplars (M, H, W, 3) -> (N,) max over exemplars of the mask IoU."""
    a = foreground(samples).flatten(1).float()  # (N, HW)
    b = foreground(exemplars).flatten(1).float()  # (M, HW)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - inter
    return (inter / union.clamp_min(1.0)).amax(1)


@dataclass
class SampleCheck:
    n_exemplars: int = 64
    resolution: int = 32
    seed: int = 1234
    cameras: Optional[Any] = None
    """Where the exemplars are seen from: a ToyDatasetConfig (or its config node), normally the prior's
    training data's, so samples are compared with views the prior was taught. None: the toy ranges."""
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def exemplars(self, prompt: str) -> Tensor:
        """(n_exemplars, R, R, 3) renders of the prompt, made once per prompt."""
        if prompt not in self._cache:
            cfg = ToyDatasetConfig(resolution=self.resolution)
            if self.cameras is not None:
                for key in ("elevation_range", "camera_distance_range", "fovy_range"):
                    setattr(cfg, key, [float(v) for v in getattr(self.cameras, key)])
            self._cache[prompt] = render_views(prompt, self.n_exemplars, cfg, self.seed)
        return self._cache[prompt]

    def check(self, prompt: str, samples: Tensor) -> dict[str, float]:
        """samples (N, R, R, 3) in [0, 1] of `prompt` -> {"silhouette_iou", "colour_error"[, "colour_correct"]}."""
        exemplars = self.exemplars(prompt)
        colour = mean_foreground_colour(samples)
        figures = {
            "silhouette_iou": float(best_silhouette_iou(samples, exemplars).mean()),
            "colour_error": float((colour - mean_foreground_colour(exemplars)).abs().mean()),
        }
        scene = parse_prompt(prompt)
        if len(scene.primitives) == 1:
            shape = scene.primitives[0].shape
            references = {c: mean_foreground_colour(self.exemplars(f"a {c} {shape}")) for c in COLOURS}
            nearest = min(references, key=lambda c: float((references[c] - colour).abs().sum()))
            figures["colour_correct"] = float(nearest == scene.primitives[0].colour)
        return figures


def summarise(per_prompt: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """Means over prompts of each figure, keyed '<prefix>/<figure>'."""
    keys = sorted({k for figures in per_prompt.values() for k in figures})
    return {
        f"{prefix}/{k}": sum(f[k] for f in per_prompt.values() if k in f) / sum(k in f for f in per_prompt.values())
        for k in keys
    }
