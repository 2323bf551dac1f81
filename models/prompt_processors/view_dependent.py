"""View-dependent prompting and Perp-Neg, as pure tensor functions (no model loading).

- `assign_directions` maps camera (elevation, azimuth) to one of four view prompts (DreamFusion,
  Poole et al. 2022, Sec. 3.2; thresholds as in threestudio, REFERENCE.md), or, with diagonal views
  on, one of six: "front side" and "backside side" split the azimuth finer. Four words cover 90° of
  azimuth each, and over any 90° a cube shows every silhouette it has, so a prior told only those
  cannot tell an axis-aligned cube from a turned one; 45° sectors can (used by the toy prior).
- `perp_neg_weights` gives Perp-Neg's per-camera prompt mix and negative weights (Armandpour et al.
  2023, the interpolated-embedding variant used by threestudio's `perp_neg` option); the noise
  combination itself is guidance, in models/guidance/cfg.py beside plain CFG.

Hand-written because these are a few lines of arithmetic; keeping them model-free makes them
exactly testable against hand-computed values.

Conventions: azimuth in degrees in [-180, 180), 0 = front (camera on +x); elevation in degrees.
View indices everywhere: 0 side, 1 front, 2 back, 3 overhead, and with diagonal views 4 front side,
5 back side (matches `view_prompts`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

SIDE, FRONT, BACK, OVERHEAD, FRONT_SIDE, BACK_SIDE = 0, 1, 2, 3, 4, 5
VIEW_NAMES: tuple[str, ...] = ("side", "front", "back", "overhead")
DIAGONAL_VIEW_NAMES: tuple[str, ...] = ("front_side", "back_side")
# "backside" rather than "back" in the text, as DreamFusion / threestudio phrase it.
_VIEW_SUFFIX: tuple[str, ...] = (
    "side view", "front view", "backside view", "overhead view", "front side view", "backside side view"
)


@dataclass
class ViewDirections:
    """Thresholds (degrees) for direction assignment; ProlificDreamer uses front/back 30."""

    front_threshold_deg: float = 45.0
    """|azimuth| below this is a front view."""
    back_threshold_deg: float = 45.0
    """|azimuth| above 180 minus this is a back view."""
    overhead_threshold_deg: float = 60.0
    """elevation above this is an overhead view."""
    diagonal_threshold_deg: Optional[float] = None
    """None: four views. Else |azimuth| within this of 45 is a front-side view, within it of 135 a
    back-side view (22.5 with front and back 22.5: eight equal azimuth sectors, folded left-right)."""

    @property
    def diagonal_views(self) -> bool:
        return self.diagonal_threshold_deg is not None

    def assign(self, elevation_deg: Tensor, azimuth_deg: Tensor) -> Tensor:
        return assign_directions(
            elevation_deg,
            azimuth_deg,
            self.front_threshold_deg,
            self.back_threshold_deg,
            self.overhead_threshold_deg,
            self.diagonal_threshold_deg,
        )


def assign_directions(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    front_threshold: float = 45.0,
    back_threshold: float = 45.0,
    overhead_threshold: float = 60.0,
    diagonal_threshold: float | None = None,
) -> Tensor:
    """elevation_deg (B,), azimuth_deg (B,) in [-180, 180) -> LongTensor (B,) of view indices.

    Assigned in the order side (default) -> diagonal (if on) -> front -> back -> overhead, later
    overriding earlier, so an overhead view is overhead whatever its azimuth. Thresholds are strict:
    an azimuth exactly on a boundary falls to the view assigned before.
    """
    elevation_deg = torch.as_tensor(elevation_deg, dtype=torch.float32)
    azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float32)
    az = azimuth_deg.abs()
    d = torch.full(azimuth_deg.shape, SIDE, dtype=torch.long, device=azimuth_deg.device)
    if diagonal_threshold is not None:
        d[(az - 45.0).abs() < diagonal_threshold] = FRONT_SIDE
        d[(az - 135.0).abs() < diagonal_threshold] = BACK_SIDE
    d[az < front_threshold] = FRONT
    d[az > 180.0 - back_threshold] = BACK
    d[elevation_deg > overhead_threshold] = OVERHEAD
    return d


def view_prompts(prompt: str, overrides: dict[str, str] | None = None, diagonal_views: bool = False) -> list[str]:
    """Prompts in view-index order [side, front, back, overhead] (+ [front side, back side]).

    `overrides` maps a view name (VIEW_NAMES, and DIAGONAL_VIEW_NAMES with diagonal views) to a full
    replacement text.
    """
    names = VIEW_NAMES + DIAGONAL_VIEW_NAMES if diagonal_views else VIEW_NAMES
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(names)
    if unknown:
        raise KeyError(f"unknown view names {sorted(unknown)}; expected some of {list(names)}")
    return [overrides.get(name, f"{prompt}, {suffix}") for name, suffix in zip(names, _VIEW_SUFFIX)]


def _shifted_exp_decay(params: Sequence[float], r: Tensor) -> Tensor:
    """f(r) = a exp(-b r) + c (Perp-Neg's weight schedules, threestudio's shifted_expotional_decay)."""
    a, b, c = params
    return a * torch.exp(-b * r) + c


def perp_neg_weights(
    azimuth_deg: Tensor,
    elevation_deg: Tensor,
    overhead_threshold: float = 60.0,
    f_sb: Sequence[float] = (1.0, 0.5, -0.606),
    f_fsb: Sequence[float] = (1.0, 0.5, 0.967),
    f_fs: Sequence[float] = (4.0, 0.5, -2.426),
    f_sf: Sequence[float] = (4.0, 0.5, -2.426),
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample positive-embedding mix and negative prompts/weights for Perp-Neg.

    azimuth_deg (B,), elevation_deg (B,) ->
      pos_mix (B, 3): weights over the embeddings [front, side, back] (rows sum to 1),
      neg_index (B, 2) long: view indices (side 0, front 1, back 2) of the two negative prompts,
      neg_weights (B, 2): w_i in models/guidance/cfg.py perp_neg_guidance (negative numbers push away from that view).

    Front half (|az| < 90): r = 1 - |az|/90, positive r front + (1-r) side,
      negatives [front, side] with weights [-f_fs(r), -f_sf(1-r)].
    Back half (|az| >= 90): r = 2 - |az|/90, positive r side + (1-r) back,
      negatives [side, front] with weights [-f_sb(r), -f_fsb(r)].
    Overhead (elevation > threshold): negative weights zero (the positive mix is kept).
    """
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).abs()
    el = torch.as_tensor(elevation_deg, dtype=torch.float32)
    front_half = az < 90.0
    r = torch.where(front_half, 1.0 - az / 90.0, 2.0 - az / 90.0)  # (B,) in [0, 1]
    zeros = torch.zeros_like(r)

    pos_front_half = torch.stack([r, 1.0 - r, zeros], dim=-1)  # r front + (1-r) side
    pos_back_half = torch.stack([zeros, r, 1.0 - r], dim=-1)  # r side + (1-r) back
    pos_mix = torch.where(front_half[:, None], pos_front_half, pos_back_half)

    idx_front_half = torch.tensor([FRONT, SIDE], dtype=torch.long, device=az.device)
    idx_back_half = torch.tensor([SIDE, FRONT], dtype=torch.long, device=az.device)
    neg_index = torch.where(front_half[:, None], idx_front_half, idx_back_half)

    w_front_half = torch.stack([-_shifted_exp_decay(f_fs, r), -_shifted_exp_decay(f_sf, 1.0 - r)], dim=-1)
    w_back_half = torch.stack([-_shifted_exp_decay(f_sb, r), -_shifted_exp_decay(f_fsb, r)], dim=-1)
    neg_weights = torch.where(front_half[:, None], w_front_half, w_back_half)
    # Overhead views have no meaningful front/side/back to push away from.
    neg_weights = torch.where((el > overhead_threshold)[:, None], torch.zeros_like(neg_weights), neg_weights)
    return pos_mix, neg_index, neg_weights
