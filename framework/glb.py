"""The GLB of an export: trimesh writes it, then every bufferView gets its glTF `target`.

glTF 2.0 lets a bufferView name what it feeds: `34962` (ARRAY_BUFFER) for vertex attributes,
`34963` (ELEMENT_ARRAY_BUFFER) for triangle indices. trimesh leaves the field out, which the
Khronos glTF-Validator reports as a BUFFER_VIEW_TARGET_MISSING hint on every view, and some
engines then guess how to upload the data. `set_buffer_view_targets` adds the targets by
rewriting only the JSON chunk of the GLB (header and chunk lengths follow; the binary chunk is
copied as it is). Views of images keep no target, as the specification requires.

Axes: glTF is +y up, so world (x, y, z) is written as (x, z, -y) (`WORLD_TO_GLTF`, a rotation
with determinant +1, so winding and normals stay outward). The texture must already be
sRGB-encoded (framework/colour_space.py): glTF defines `baseColorTexture` as sRGB.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

__all__ = ["WORLD_TO_GLTF", "write_glb", "set_buffer_view_targets", "read_glb_json"]

# world +z-up -> glTF +y-up: (x, y, z) -> (x, z, -y); rows are the glTF axes.
WORLD_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_MAGIC, _JSON, _BIN = b"glTF", 0x4E4F534A, 0x004E4942


def write_glb(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: np.ndarray,
              normals: np.ndarray) -> None:
    """One textured primitive: vertices (V, 3) and normals (V, 3) in WORLD coordinates (rotated here),
    faces (F, 3), uv (V, 2) with OBJ's bottom-left origin (trimesh flips v for glTF), image (H, W, 3)
    uint8 sRGB with rows from the top."""
    import trimesh
    from PIL import Image

    material = trimesh.visual.material.PBRMaterial(
        name="material_0", baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=1.0,
    )
    mesh = trimesh.Trimesh(
        vertices=vertices @ WORLD_TO_GLTF.T, faces=faces, vertex_normals=normals @ WORLD_TO_GLTF.T,
        visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False,
    )
    # the welded mesh's normals, so viewers shade smoothly across UV seams rather than flat
    data = mesh.export(file_type="glb", include_normals=True)
    Path(path).write_bytes(set_buffer_view_targets(data))


def _chunks(glb: bytes) -> tuple[dict, bytes]:
    """The JSON document and the binary chunk (b"" if none) of a GLB."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    if magic != _MAGIC or version != 2:
        raise ValueError("not a glTF 2.0 binary (GLB) file")
    length, kind = struct.unpack_from("<II", glb, 12)
    if kind != _JSON:
        raise ValueError("a GLB's first chunk must be JSON")
    document = json.loads(glb[20:20 + length])
    binary = b""
    rest = 20 + length
    if rest < len(glb):
        bin_length, kind = struct.unpack_from("<II", glb, rest)
        if kind == _BIN:
            binary = glb[rest + 8:rest + 8 + bin_length]
    return document, binary


def read_glb_json(path: Path) -> dict:
    """The JSON document of a GLB file."""
    return _chunks(Path(path).read_bytes())[0]


def set_buffer_view_targets(glb: bytes) -> bytes:
    """The same GLB with `target` set on the bufferViews its mesh primitives read (see module docstring)."""
    document, binary = _chunks(glb)
    accessors, views = document.get("accessors", []), document.get("bufferViews", [])
    for mesh in document.get("meshes", []):
        for primitive in mesh["primitives"]:
            uses = [(index, ARRAY_BUFFER) for index in primitive.get("attributes", {}).values()]
            if "indices" in primitive:
                uses.append((primitive["indices"], ELEMENT_ARRAY_BUFFER))
            for accessor, target in uses:
                view = accessors[accessor].get("bufferView")
                if view is None:
                    continue
                if views[view].get("target", target) != target:
                    raise ValueError(f"bufferView {view} feeds both vertex attributes and indices")
                views[view]["target"] = target
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned; JSON pads with spaces
    out = struct.pack("<II", len(text), _JSON) + text
    if binary:
        binary += b"\0" * (-len(binary) % 4)
        out += struct.pack("<II", len(binary), _BIN) + binary
    return struct.pack("<4sII", _MAGIC, 2, 12 + len(out)) + out
