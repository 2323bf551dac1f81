"""Tests for framework.video: mp4 round trip, image saving and grids."""
from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from framework.video import image_grid, save_image, to_uint8, write_video


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    t = np.linspace(0, 1, n)
    return [np.broadcast_to(np.array([ti, 1 - ti, 0.5], np.float32), (h, w, 3)).copy() for ti in t]


def _read(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        frames = [f for f in reader]
        meta = reader.get_meta_data()
    finally:
        reader.close()
    return frames, meta


def test_mp4_round_trip_count_size_and_colour(tmp_path):
    frames = _frames(120, 48, 64)
    path = write_video(frames, tmp_path / "sub" / "turntable.mp4", fps=30)
    back, meta = _read(path)
    assert len(back) == 120
    assert back[0].shape == (48, 64, 3)
    assert meta["codec"] == "h264" and abs(meta["fps"] - 30) < 1e-6
    # Lossy, but a flat colour survives: first frame is green-ish, last red-ish.
    for i in (0, 119):
        err = np.abs(back[i].astype(float) / 255 - frames[i]).mean()
        assert err < 0.03, f"frame {i} colour error {err}"


def test_odd_size_padded_to_even_and_uint8_and_tensor_frames(tmp_path):
    frames = [torch.rand(33, 45, 3) for _ in range(5)] + [np.zeros((33, 45, 3), np.uint8)]
    back, _ = _read(write_video(frames, tmp_path / "odd.mp4", fps=10))
    assert len(back) == 6
    assert back[0].shape == (34, 46, 3)


def test_mismatched_frame_size_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="frame 1 has size"):
        write_video([np.zeros((8, 8, 3)), np.zeros((8, 10, 3))], tmp_path / "bad.mp4")


def test_save_image_float_and_single_channel(tmp_path):
    img = np.zeros((4, 6, 3), np.float32)
    img[0, 0] = [1.0, 0.5, 2.0]  # out of range is clipped
    p = save_image(tmp_path / "a" / "rgb.png", img)
    back = np.asarray(Image.open(p))
    assert back.shape == (4, 6, 3)
    assert tuple(back[0, 0]) == (255, 128, 255)
    back1 = np.asarray(Image.open(save_image(tmp_path / "op.png", torch.full((4, 6, 1), 0.25))))
    assert back1.shape == (4, 6) and back1[0, 0] == 64


def test_image_grid_layout():
    rgb = np.zeros((4, 5, 3), np.float32)
    rgb[..., 0] = 1
    normal = np.full((4, 5, 3), 0.5, np.float32)
    opacity = torch.ones(4, 5, 1)
    grid = image_grid([rgb, normal, opacity], pad=2, pad_value=0.0)
    assert grid.shape == (4, 15 + 4, 3) and grid.dtype == np.float32
    np.testing.assert_allclose(grid[:, :5], rgb)
    np.testing.assert_allclose(grid[:, 5:7], 0.0)
    np.testing.assert_allclose(grid[:, 7:12], normal, atol=1 / 255)
    np.testing.assert_allclose(grid[:, 14:], 1.0)
    two_rows = image_grid([rgb, normal, opacity], ncols=2)
    assert two_rows.shape == (8, 10, 3)
    np.testing.assert_allclose(two_rows[4:, 5:], 1.0)  # the empty cell keeps pad_value
    with pytest.raises(ValueError, match="one size"):
        image_grid([rgb, np.zeros((3, 5, 3))])


def test_to_uint8_passthrough():
    u = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_uint8(u) is u
