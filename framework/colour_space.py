"""The colour convention of exported textures: albedo is linear, the texture file is sRGB.

Every albedo in the framework (a material's `albedo`, the toy scenes' colours, the values the
renderer multiplies by shading) is LINEAR reflectance in [0, 1]. Image files of a mesh's colour
are sRGB-encoded, because that is what readers assume: glTF 2.0 says a `baseColorTexture` holds
sRGB values, and OBJ/MTL `map_Kd` textures are read as sRGB by Blender, three.js and the rest.
So the exporter encodes the baked albedo with the sRGB transfer function before writing the
8-bit PNG (`encode_srgb8`), and whoever reads the texture back as albedo decodes it first
(`decode_srgb8`; the toy evaluator does). Linear red 0.80 is stored as 231 (0.906), not 204.

The transfer function is the piecewise sRGB curve of IEC 61966-2-1 (a line near black, a 2.4
power above), not a plain 2.2 gamma.
"""
from __future__ import annotations

import numpy as np

__all__ = ["linear_to_srgb", "srgb_to_linear", "encode_srgb8", "decode_srgb8"]


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] (clipped) -> sRGB-encoded values in [0, 1], same shape, float64."""
    x = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] (clipped) -> linear values in [0, 1], same shape, float64."""
    x = np.clip(np.asarray(encoded, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def encode_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] -> 8-bit sRGB code values (uint8), ready to write as an image."""
    return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)


def decode_srgb8(codes: np.ndarray) -> np.ndarray:
    """8-bit sRGB code values (an image read from a file) -> linear values in [0, 1], float64."""
    return srgb_to_linear(np.asarray(codes, dtype=np.float64) / 255.0)
