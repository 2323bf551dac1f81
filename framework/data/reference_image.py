"""The input of image-to-3D: one reference image, its object mask, and optional depth and normal maps.

Three ways give the object's mask:
- an RGBA image, whose alpha is the object's coverage (mask = alpha > 0.5);
- an RGB (or RGBA) image and `mask_path`, a mask image of the same size: greyscale, an alpha channel,
  or RGB; its values are divided by the mask's own maximum (so a 0/1 mask saved as 8-bit works as well
  as a 0/255 one) and mask = value > 0.5;
- an RGB image and `background_removal`: "white" (a plain background: pixels whose colour is within
  `background_tolerance` of the image's corner colour) or "rembg" (the optional rembg package).

The colour is composited over white by the coverage, so everything downstream sees the object on the
white background Zero-1-to-3 conditions on, whatever colour the file stores under transparent pixels.
Optional maps beside the image, `<stem>_depth.png` (one channel, to [0, 1]) and `<stem>_normal.png`
(RGB mapped to [-1, 1]), are loaded when present; for threestudio's `name_rgba.png` the maps are also
looked for as `name_depth.png` / `name_normal.png`.

Every mistake a user can make with the files is a ConfigError raised here, when the data module is
built, naming the file and the fix, so a bad input never reaches training.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from framework.config import ConfigError

BACKGROUND_REMOVALS = ("white", "rembg")
THREE_WAYS = (
    "give the object's mask one of three ways: save the image as RGBA with alpha 0 on the background, "
    "set data.mask_path to a mask image of the same size, or set data.background_removal to 'white' "
    "(a plain background) or 'rembg'"
)
# Pillow modes that are colour images in another encoding: converted, not refused.
TO_RGB = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA", "PA": "RGBA"}


@dataclass
class ReferenceImage:
    """Full-resolution maps of the reference image, channels last."""

    rgb: Tensor  # (H, W, 3) in [0, 1], composited over white by `coverage`
    coverage: Tensor  # (H, W, 1) in [0, 1]: alpha, the mask file's values, or the background removal's
    depth: Optional[Tensor] = None  # (H, W, 1) in [0, 1]
    normal: Optional[Tensor] = None  # (H, W, 3) in [-1, 1], not renormalised
    source: str = ""  # what the mask came from, for messages

    @property
    def mask(self) -> Tensor:
        """(H, W, 1) float in {0, 1}."""
        return (self.coverage > 0.5).float()

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def resized(self, height: int, width: int) -> "ReferenceImage":
        """Every map resized to (height, width) (see `resize`); the mask follows the resized coverage."""
        return replace(
            self,
            rgb=resize(self.rgb, height, width),
            coverage=resize(self.coverage, height, width),
            depth=None if self.depth is None else resize(self.depth, height, width),
            normal=None if self.normal is None else resize(self.normal, height, width),
        )


def resize(image: Tensor, height: int, width: int) -> Tensor:
    """(H, W, C) -> (height, width, C), antialiased.

    Shrinking uses the area (box) filter: for an integer factor each pixel is the exact mean of its
    block, which is what a supersampled render at the smaller size gives. Enlarging uses bilinear.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    x = image.permute(2, 0, 1)[None]
    if height <= h and width <= w:
        y = F.interpolate(x, size=(height, width), mode="area")
    else:
        y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).contiguous()


def open_image(path: str, what: str, key: str) -> Image.Image:
    """Pillow image at `path`, or a ConfigError naming the file, the config key and the fix."""
    p = Path(path)
    if not p.is_file():
        problem = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"{what} {path!r} {problem} (resolved: {p.resolve()}); set {key} to an existing image file")
    try:
        image = Image.open(p)
        image.load()  # decode now: a truncated file fails here, not in the middle of training
    except UnidentifiedImageError as error:
        raise ConfigError(f"{what} {path!r} is not an image Pillow can read (use a PNG or JPEG); fix {key}") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # Pillow's decode failures
        raise ConfigError(f"{what} {path!r} could not be read ({error}); re-save it as a PNG and check {key}") from error
    return image


def _array(image: Image.Image) -> np.ndarray:
    """Pixels as float32 in [0, 1] (8-bit / 255, 16-bit / 65535, float as stored), (H, W) or (H, W, C)."""
    array = np.asarray(image)
    if image.mode == "1":
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind in "ui":  # 16-bit PNGs open as I;16 (uint16) or I (int32)
        return array.astype(np.float32) / 65535.0
    return array.astype(np.float32)


def _colour_image(path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """-> rgb (H, W, 3) and alpha (H, W) or None, in [0, 1]."""
    image = open_image(path, "image", "data.image_path")
    if image.mode == "P":  # a palette image with a transparent entry is RGBA
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in TO_RGB:
        image = image.convert(TO_RGB[image.mode])
    if image.mode not in ("RGB", "RGBA"):
        n = len(image.getbands())
        raise ConfigError(
            f"image {path!r} has {n} channel{'s' if n != 1 else ''} (Pillow mode {image.mode}); the reference image "
            f"must be RGB (3 channels) or RGBA (4 channels). Convert it, e.g. Image.open(path).convert('RGBA')"
        )
    array = _array(image)
    return array[..., :3], (array[..., 3] if image.mode == "RGBA" else None)


def _mask_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """The coverage (H, W) in [0, 1] from a mask file: its one channel, its alpha channel (when the
    alpha is not constant: an opaque RGBA mask stores the mask in its colour), or the mean of RGB."""
    image = open_image(path, "mask", "data.mask_path")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.size != (size[1], size[0]):
        raise ConfigError(
            f"mask {path!r} is {image.size[0]}x{image.size[1]} but the image is {size[1]}x{size[0]} (width x height); "
            "the mask must be the same size as the image, pixel for pixel"
        )
    array = _array(image)
    if array.ndim == 3:
        alpha = array[..., -1]
        if image.mode in ("LA", "RGBA") and alpha.max() > alpha.min():
            array = alpha
        else:
            array = array[..., : 1 if image.mode in ("LA",) else 3].mean(-1)
    peak = float(array.max())
    return array / peak if peak > 0 else array


def _white_removal(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """Coverage (H, W) in {0, 1}: background = within `tolerance` (max over channels) of the corner colour.
    The median of the four corners, so an object touching one corner does not change the background."""
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]])
    background = np.median(corners, axis=0)
    distance = np.abs(rgb - background).max(-1)
    return (distance > tolerance).astype(np.float32)


def _rembg_removal(rgb: np.ndarray, path: str) -> np.ndarray:
    """Coverage (H, W) in [0, 1]: the alpha of rembg's cut-out."""
    try:
        import rembg  # optional: only this background_removal needs it
    except ImportError as error:
        raise ConfigError(
            "background_removal='rembg' needs the optional rembg package, which is not installed: run "
            "`pip install rembg` (its segmentation model downloads on first use, so that first run needs the "
            "network). Or use background_removal=white for a plain background, an RGBA image, or data.mask_path"
        ) from error
    try:
        session = rembg.new_session()
        cut = rembg.remove(Image.fromarray((rgb * 255.0).round().astype(np.uint8)), session=session)
    except Exception as error:  # noqa: BLE001 - rembg's download / runtime errors have no common base class
        raise ConfigError(
            f"rembg could not remove the background of {path!r}: {type(error).__name__}: {error}. rembg downloads "
            "its model on first use (to ~/.u2net, or $U2NET_HOME): run once with network access or copy the model "
            "there; or use background_removal=white, an RGBA image, or data.mask_path"
        ) from error
    return _array(cut.convert("RGBA"))[..., 3]


def _optional_map(image_path: str, kind: str) -> Optional[Path]:
    """`<stem>_<kind>.png` beside the image, or threestudio's `<name>_<kind>.png` for `<name>_rgba.png`."""
    p = Path(image_path)
    stems = [p.stem] + ([p.stem[: -len("_rgba")]] if p.stem.endswith("_rgba") else [])
    for stem in stems:
        candidate = p.with_name(f"{stem}_{kind}.png")
        if candidate.is_file():
            return candidate
    return None


def _depth_map(path: Path, size: tuple[int, int]) -> Tensor:
    image = open_image(str(path), "depth map", "the <stem>_depth.png beside data.image_path")
    if image.mode == "LA":
        image = image.getchannel("L")
    if image.mode not in ("L", "I", "F") and not image.mode.startswith("I;16"):
        raise ConfigError(
            f"depth map {str(path)!r} has Pillow mode {image.mode}; it must have one channel "
            "(8- or 16-bit greyscale PNG). Re-save it as greyscale or remove it"
        )
    _check_size(image, size, path, "depth map")
    return torch.from_numpy(_array(image)[..., None].copy())


def _normal_map(path: Path, size: tuple[int, int]) -> Tensor:
    image = open_image(str(path), "normal map", "the <stem>_normal.png beside data.image_path")
    if image.mode not in ("RGB", "RGBA"):
        raise ConfigError(
            f"normal map {str(path)!r} has Pillow mode {image.mode}; it must be RGB (x, y, z mapped to [0, 255]). "
            "Re-save it as RGB or remove it"
        )
    _check_size(image, size, path, "normal map")
    return torch.from_numpy(_array(image)[..., :3] * 2.0 - 1.0)


def _check_size(image: Image.Image, size: tuple[int, int], path: Path, what: str) -> None:
    if image.size != (size[1], size[0]):
        raise ConfigError(
            f"{what} {str(path)!r} is {image.size[0]}x{image.size[1]} but the image is {size[1]}x{size[0]}; "
            "it must be the same size as the image, pixel for pixel"
        )


def check_mask(coverage: Tensor, source: str, where: str = "") -> None:
    """ConfigError for a mask with no object pixel or no background pixel. coverage: (H, W, 1)"""
    mask = coverage > 0.5
    white = source.startswith("background_removal=white")
    if not mask.any():
        hint = " (all of it is within data.background_tolerance of the corner colour: lower it?)" if white else ""
        raise ConfigError(
            f"the object mask from {source}{where} is empty: no pixel belongs to the object, so there is nothing "
            f"to reconstruct{hint}. Check the mask; {THREE_WAYS}"
        )
    if mask.all():
        hint = " (none of it is within data.background_tolerance of the corner colour: raise it?)" if white else ""
        raise ConfigError(
            f"the object mask from {source}{where} is full: every pixel belongs to the object, so there is no "
            f"background{hint}. An opaque image needs a mask: {THREE_WAYS}"
        )


def recentre(image: ReferenceImage, fraction: float) -> ReferenceImage:
    """The object scaled so its mask's bounding box's larger side (relative to the frame's side along it)
    is `fraction` of the frame, and centred; the frame keeps its size (threestudio's preprocessing,
    which leaves a border of 1 - fraction). Background: white colour, zero coverage, depth and normal."""
    h, w = image.size
    rows = torch.nonzero(image.mask[..., 0].any(1)).squeeze(-1)
    cols = torch.nonzero(image.mask[..., 0].any(0)).squeeze(-1)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    scale = fraction / max((y1 - y0) / h, (x1 - x0) / w)
    nh = min(h, max(1, round((y1 - y0) * scale)))
    nw = min(w, max(1, round((x1 - x0) * scale)))
    top, left = (h - nh) // 2, (w - nw) // 2

    def move(layer: Optional[Tensor], fill: float) -> Optional[Tensor]:
        if layer is None:
            return None
        canvas = torch.full((h, w, layer.shape[-1]), fill, dtype=layer.dtype)
        canvas[top : top + nh, left : left + nw] = resize(layer[y0:y1, x0:x1], nh, nw)
        return canvas

    return replace(
        image,
        rgb=move(image.rgb, 1.0),
        coverage=move(image.coverage, 0.0),
        depth=move(image.depth, 0.0),
        normal=move(image.normal, 0.0),
    )


def load_reference_image(
    image_path: str,
    mask_path: Optional[str] = None,
    background_removal: Optional[str] = None,
    background_tolerance: float = 0.05,
    recenter_fraction: Optional[float] = None,
) -> ReferenceImage:
    """Read and check the reference image and its maps (the module docstring lists the inputs)."""
    if image_path in (None, "", "???"):
        raise ConfigError("data.image_path is required: set it to the reference image (RGBA PNG, or RGB with a mask)")
    if background_removal is not None and background_removal not in BACKGROUND_REMOVALS:
        raise ConfigError(
            f"data.background_removal={background_removal!r} is unknown; use one of {BACKGROUND_REMOVALS} or null"
        )
    if background_removal is not None and mask_path is not None:
        raise ConfigError("set only one of data.mask_path and data.background_removal: both give the object's mask")
    if recenter_fraction is not None and not 0.0 < recenter_fraction <= 1.0:
        raise ConfigError(f"data.recenter_fraction={recenter_fraction} must be in (0, 1], or null for no recentring")

    rgb, alpha = _colour_image(image_path)
    size = rgb.shape[:2]
    if mask_path is not None:
        coverage, source = _mask_image(mask_path, size), f"mask {mask_path!r}"
    elif background_removal == "white":
        coverage, source = _white_removal(rgb, background_tolerance), f"background_removal=white on {image_path!r}"
    elif background_removal == "rembg":
        coverage, source = _rembg_removal(rgb, image_path), f"background_removal=rembg on {image_path!r}"
    elif alpha is not None:
        coverage, source = alpha, f"the alpha channel of {image_path!r}"
    else:
        raise ConfigError(
            f"image {image_path!r} is RGB with no alpha channel, so the object's mask is unknown: {THREE_WAYS}"
        )

    coverage_t = torch.from_numpy(np.ascontiguousarray(coverage, dtype=np.float32))[..., None]
    check_mask(coverage_t, source)
    rgb_t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    depth_path, normal_path = _optional_map(image_path, "depth"), _optional_map(image_path, "normal")
    image = ReferenceImage(
        rgb=rgb_t * coverage_t + (1.0 - coverage_t),  # over white
        coverage=coverage_t,
        depth=None if depth_path is None else _depth_map(depth_path, size),
        normal=None if normal_path is None else _normal_map(normal_path, size),
        source=source,
    )
    return image if recenter_fraction is None else recentre(image, recenter_fraction)
