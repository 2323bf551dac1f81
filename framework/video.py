"""Writing validation images, image grids and turntable videos.

Images here are numpy arrays or tensors (H, W, C), float in [0, 1] or uint8, C in {1, 3, 4}.
Videos are H.264 mp4 (libx264, yuv420p: the pixel format every browser and player decodes)
through imageio's ffmpeg plugin. yuv420p subsamples chroma 2x2, so odd frame sizes are padded
by one edge-replicated row/column here rather than letting imageio silently resize.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

__all__ = ["to_uint8", "save_image", "image_grid", "write_video"]


def to_uint8(image: np.ndarray | Tensor) -> np.ndarray:
    """(H, W, C) float in [0, 1] (clipped) or uint8 -> (H, W, C) uint8. (H, W) gets C = 1."""
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> (H, W, 3): grey is repeated, alpha is dropped."""
    c = image.shape[-1]
    if c == 1:
        return np.repeat(image, 3, axis=-1)
    if c == 4:
        return image[..., :3]
    if c == 3:
        return image
    raise ValueError(f"expected 1, 3 or 4 channels, got {c}")


def save_image(path: str | Path, image: np.ndarray | Tensor) -> Path:
    """Save (H, W, C) float [0, 1] or uint8, C in {1, 3, 4}, as PNG/JPEG (by suffix)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(image)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
    return path


def image_grid(
    images: Sequence[np.ndarray | Tensor],  # each (H, W, C), C in {1, 3, 4}
    ncols: int | None = None,
    pad: int = 0,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile same-sized images row-major into one (rows*H + gaps, ncols*W + gaps, 3) float [0, 1].

    Default is one row (e.g. RGB | normal | opacity side by side). Single-channel images
    (opacity, depth) are shown as grey.
    """
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    tiles = [_to_rgb(to_uint8(im)).astype(np.float32) / 255.0 for im in images]
    shapes = {t.shape for t in tiles}
    if len(shapes) != 1:
        sizes = sorted(s[:2] for s in shapes)
        raise ValueError(f"image_grid needs images of one size, got {sizes}")
    h, w, _ = tiles[0].shape
    ncols = ncols or len(tiles)
    nrows = -(-len(tiles) // ncols)
    grid = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3),
                   pad_value, dtype=np.float32)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile
    return grid


def write_video(
    frames: Sequence[np.ndarray | Tensor],  # each (H, W, 3|1|4) float [0, 1] or uint8
    path: str | Path,
    fps: int = 30,
    quality: int = 8,
) -> Path:
    """Write an H.264 mp4 (libx264, yuv420p). Odd H or W are padded to even by edge replication.

    quality: imageio-ffmpeg's 0..10 scale (higher is better, bigger).
    """
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = _to_rgb(to_uint8(frames[0]))
    h, w = first.shape[:2]
    pad_h, pad_w = h % 2, w % 2
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        quality=quality, macro_block_size=1,  # sizes are made even here; no silent resize
    )
    try:
        for i, frame in enumerate(frames):
            rgb = _to_rgb(to_uint8(frame))
            if rgb.shape[:2] != (h, w):
                raise ValueError(f"frame {i} has size {rgb.shape[:2]}, frame 0 has {(h, w)}")
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.append_data(rgb)
    finally:
        writer.close()
    return path
