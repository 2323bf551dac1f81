"""The toy world's scenes: prompt grammar, primitives and their exact signed distance functions.

TOYWORLD.md fixes everything here (shapes, sizes, colours, composite placement, held-out
prompts); this module is its one executable copy. A prompt parses into a `ToyScene`, a list of
scaled and z-translated primitives with exact SDFs (Inigo Quilez's closed forms), whose union is
the scene. The scene answers SDF, albedo and normal queries and samples points exactly on its
surface (analytically per primitive, so scoring does not depend on a mesher's accuracy).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from framework.config import ConfigError

SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus")

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.25, 0.80),
    "yellow": (0.90, 0.80, 0.10),
    "purple": (0.55, 0.15, 0.70),
    "orange": (0.95, 0.50, 0.10),
}

SPHERE_RADIUS = 0.45
CUBE_HALF = 0.32
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.30, 0.40
CONE_RADIUS, CONE_HALF_HEIGHT = 0.40, 0.40  # base disc at z = -0.40, apex at z = +0.40
TORUS_MAJOR, TORUS_MINOR = 0.30, 0.12

# z-extent of each shape at canonical size (TOYWORLD.md table); drives composite placement.
SHAPE_Z_EXTENT: dict[str, tuple[float, float]] = {
    "sphere": (-SPHERE_RADIUS, SPHERE_RADIUS),
    "cube": (-CUBE_HALF, CUBE_HALF),
    "cylinder": (-CYLINDER_HALF_HEIGHT, CYLINDER_HALF_HEIGHT),
    "cone": (-CONE_HALF_HEIGHT, CONE_HALF_HEIGHT),
    "torus": (-TORUS_MINOR, TORUS_MINOR),
}

COMPOSITE_SCALE = 0.5
COMPOSITE_FLOOR = -0.45

# The single-shape prompts held out of every trained toy prior (composites with a torus on top are
# too: is_held_out). The one list: the prior trainers check their held-out samples on it, and the
# shipped weights' training-config records list it, so its values and order stay as they are.
HELD_OUT_SINGLE_PROMPTS: tuple[str, ...] = (
    "a green torus",
    "a purple cone",
    "a orange cube",
    "a blue cylinder",
    "a yellow sphere",
)

GRAMMAR = "'a {colour} {shape}' or 'a {colour} {shape} on top of a {colour} {shape}'"

_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_OBJECT = rf"an? ({_COLOUR_RE}) ({_SHAPE_RE})"
_PROMPT_RE = re.compile(rf"^{_OBJECT}(?: on top of {_OBJECT})?$")


class ToyPromptError(ConfigError):
    """A prompt outside the toy world's grammar; the message says what the toy world understands."""


def _canonical_object(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"  # TOYWORLD.md spells it 'a orange', not 'an orange'


def single_shape_prompts() -> list[str]:
    """The 30 single-shape prompts in canonical spelling (colour-major order)."""
    return [_canonical_object(c, s) for c in COLOURS for s in SHAPES]


def composite_prompts() -> list[str]:
    """All 900 two-object prompts in canonical spelling."""
    singles = single_shape_prompts()
    return [f"{top} on top of {bottom}" for top in singles for bottom in singles]


def is_held_out(prompt: str) -> bool:
    """Whether a prompt is held out of trained toy priors' training data (TOYWORLD.md)."""
    scene = parse_prompt(prompt)
    if len(scene.primitives) == 2:
        return scene.primitives[0].shape == "torus"
    return scene.prompt in HELD_OUT_SINGLE_PROMPTS


# --- exact SDFs of the canonical shapes (centred at the origin, axis along z) -----------------


def _sdf_sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - SPHERE_RADIUS


def _sdf_cube(p: Tensor) -> Tensor:
    q = p.abs() - CUBE_HALF
    outside = q.clamp(min=0.0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0.0)
    return outside + inside


def _sdf_cylinder(p: Tensor) -> Tensor:
    d = torch.stack([p[:, :2].norm(dim=-1) - CYLINDER_RADIUS, p[:, 2].abs() - CYLINDER_HALF_HEIGHT], dim=-1)
    return d.max(dim=-1).values.clamp(max=0.0) + d.clamp(min=0.0).norm(dim=-1)


def _sdf_cone(p: Tensor) -> Tensor:
    # Quilez's exact capped cone (radius r1 at z=-h, r2 at z=+h) with r2 = 0: distance in the
    # (radial, z) half-plane to the cap segment (ca) and to the slanted side segment (cb).
    h, r1 = CONE_HALF_HEIGHT, CONE_RADIUS
    qx, qy = p[:, :2].norm(dim=-1), p[:, 2]
    k1x, k1y = 0.0, h
    k2x, k2y = -r1, 2.0 * h
    cap_r = torch.where(qy < 0.0, torch.full_like(qx, r1), torch.zeros_like(qx))
    ca_x = qx - torch.minimum(qx, cap_r)
    ca_y = qy.abs() - h
    s = (((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0.0, 1.0)
    cb_x = qx - k1x + k2x * s
    cb_y = qy - k1y + k2y * s
    sign = torch.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
    return sign * torch.minimum(ca_x * ca_x + ca_y * ca_y, cb_x * cb_x + cb_y * cb_y).sqrt()


def _sdf_torus(p: Tensor) -> Tensor:
    q = torch.stack([p[:, :2].norm(dim=-1) - TORUS_MAJOR, p[:, 2]], dim=-1)
    return q.norm(dim=-1) - TORUS_MINOR


# Radius of the smallest origin-centred sphere containing each canonical shape.
_BOUND = {
    "sphere": SPHERE_RADIUS,
    "cube": CUBE_HALF * math.sqrt(3.0),
    "cylinder": math.hypot(CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT),
    "cone": math.hypot(CONE_RADIUS, CONE_HALF_HEIGHT),
    "torus": TORUS_MAJOR + TORUS_MINOR,
}

_SDF = {"sphere": _sdf_sphere, "cube": _sdf_cube, "cylinder": _sdf_cylinder, "cone": _sdf_cone, "torus": _sdf_torus}


# --- analytic uniform surface samplers of the canonical shapes --------------------------------


def _area(shape: str) -> float:
    if shape == "sphere":
        return 4.0 * math.pi * SPHERE_RADIUS**2
    if shape == "cube":
        return 6.0 * (2.0 * CUBE_HALF) ** 2
    if shape == "cylinder":
        r, h = CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT
        return 2.0 * math.pi * r * 2.0 * h + 2.0 * math.pi * r * r
    if shape == "cone":
        r, h2 = CONE_RADIUS, 2.0 * CONE_HALF_HEIGHT
        return math.pi * r * math.hypot(r, h2) + math.pi * r * r
    return 4.0 * math.pi**2 * TORUS_MAJOR * TORUS_MINOR


def _disc(n: int, radius: float, z: float, g: torch.Generator) -> Tensor:
    r = radius * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    phi = 2.0 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([r * phi.cos(), r * phi.sin(), torch.full_like(r, z)], dim=-1)


def _sample_canonical(shape: str, n: int, g: torch.Generator) -> Tensor:
    """n points uniformly (by area) on the canonical shape's surface, float64 (n, 3)."""
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if shape == "sphere":
        v = torch.randn(n, 3, generator=g, dtype=torch.float64)
        return SPHERE_RADIUS * v / v.norm(dim=-1, keepdim=True)
    if shape == "cube":
        face = torch.randint(0, 6, (n,), generator=g)
        axis, sign = face // 2, (face % 2).to(torch.float64) * 2.0 - 1.0
        p = (u(n, 3) * 2.0 - 1.0) * CUBE_HALF
        p[torch.arange(n), axis] = sign * CUBE_HALF
        return p
    if shape == "cylinder":
        r, h = CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT
        side = u(n) < (2.0 * h) / (2.0 * h + r)  # side area 2 pi r 2h vs caps 2 pi r^2
        phi = 2.0 * math.pi * u(n)
        p = torch.stack([r * phi.cos(), r * phi.sin(), (u(n) * 2.0 - 1.0) * h], dim=-1)
        caps = _disc(n, r, h, g)
        caps[:, 2] *= torch.where(u(n) < 0.5, -1.0, 1.0).to(torch.float64)
        return torch.where(side[:, None], p, caps)
    if shape == "cone":
        r, h = CONE_RADIUS, CONE_HALF_HEIGHT
        slant = math.hypot(r, 2.0 * h)
        side = u(n) < slant / (slant + r)  # lateral pi r l vs base pi r^2
        f = u(n).sqrt()  # fraction of the way from apex to base; lateral area grows like f^2
        phi = 2.0 * math.pi * u(n)
        p = torch.stack([r * f * phi.cos(), r * f * phi.sin(), h - 2.0 * h * f], dim=-1)
        return torch.where(side[:, None], p, _disc(n, r, -h, g))
    # torus: area element (R + r cos(theta)) dtheta dphi -> rejection on theta
    big, small = TORUS_MAJOR, TORUS_MINOR
    out = []
    got = 0
    while got < n:
        theta = 2.0 * math.pi * u(2 * n)
        keep = u(2 * n) * (big + small) < big + small * theta.cos()
        theta = theta[keep]
        phi = 2.0 * math.pi * u(theta.shape[0])
        ring = big + small * theta.cos()
        out.append(torch.stack([ring * phi.cos(), ring * phi.sin(), small * theta.sin()], dim=-1))
        got += theta.shape[0]
    return torch.cat(out)[:n]


@dataclass(frozen=True)
class ToyPrimitive:
    """One shape of a scene: canonical shape scaled uniformly then translated along z."""

    shape: str
    colour: str
    scale: float = 1.0
    z: float = 0.0

    @property
    def albedo(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]

    @property
    def z_extent(self) -> tuple[float, float]:
        lo, hi = SHAPE_Z_EXTENT[self.shape]
        return self.z + self.scale * lo, self.z + self.scale * hi

    def sdf(self, points: Tensor) -> Tensor:
        """points (N, 3) -> exact signed distance (N,); uniform scaling keeps it exact."""
        local = points - points.new_tensor((0.0, 0.0, self.z))
        return self.scale * _SDF[self.shape](local / self.scale)

    def bounding_radius(self) -> float:
        """Radius of an origin-centred sphere containing this primitive."""
        return abs(self.z) + self.scale * _BOUND[self.shape]

    def area(self) -> float:
        return self.scale**2 * _area(self.shape)

    def sample_surface(self, n: int, g: torch.Generator) -> Tensor:
        """n points uniformly on this primitive's surface, float64 (n, 3)."""
        p = _sample_canonical(self.shape, n, g) * self.scale
        p[:, 2] += self.z
        return p


@dataclass(frozen=True)
class ToyScene:
    """A parsed toy prompt: the union of its primitives (top first for composites)."""

    prompt: str  # canonical spelling
    primitives: tuple[ToyPrimitive, ...]

    def primitive_sdfs(self, points: Tensor) -> Tensor:
        """points (N, 3) -> per-primitive signed distances (N, P)."""
        return torch.stack([prim.sdf(points) for prim in self.primitives], dim=-1)

    def sdf(self, points: Tensor) -> Tensor:
        """points (N, 3) -> (N,). Union = min: exact outside, correct sign everywhere."""
        d = self.primitives[0].sdf(points)
        for prim in self.primitives[1:]:
            d = torch.minimum(d, prim.sdf(points))
        return d

    def bounding_radius(self) -> float:
        """Radius of an origin-centred sphere containing the whole scene (renderers start rays there)."""
        return max(prim.bounding_radius() for prim in self.primitives)

    def albedo(self, points: Tensor) -> Tensor:
        """points (N, 3) -> albedo (N, 3) of the primitive with the smallest signed distance."""
        table = points.new_tensor([prim.albedo for prim in self.primitives])  # (P, 3)
        if len(self.primitives) == 1:
            return table[0].expand(points.shape[0], 3).contiguous()
        nearest = self.primitive_sdfs(points).argmin(dim=-1)
        return table[nearest]

    def normal(self, points: Tensor) -> Tensor:
        """points (N, 3) -> unit SDF gradient (N, 3), by autograd (works under no_grad too)."""
        with torch.enable_grad():
            p = points.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.sdf(p).sum(), p)
        return torch.nn.functional.normalize(grad, dim=-1)

    def sample_surface(self, n: int, seed: int = 0) -> Tensor:
        """n points uniformly (by area) on the union's surface, float32 (n, 3).

        Each primitive is sampled analytically in proportion to its area; a point lying inside
        (or on: shared faces of stacked cubes/cylinders are interior to the union) another
        primitive is rejected, which keeps the rest uniform on the true union surface.
        """
        g = torch.Generator().manual_seed(seed)
        areas = torch.tensor([prim.area() for prim in self.primitives], dtype=torch.float64)
        chunks, got = [], 0
        while got < n:
            m = max(2 * (n - got), 64)
            counts = torch.bincount(torch.multinomial(areas, m, replacement=True, generator=g), minlength=len(areas))
            for i, prim in enumerate(self.primitives):
                p = prim.sample_surface(int(counts[i]), g)
                for j, other in enumerate(self.primitives):
                    if j != i and p.shape[0]:
                        p = p[other.sdf(p) > 1e-6]
                chunks.append(p)
                got += p.shape[0]
        pts = torch.cat(chunks)
        pts = pts[torch.randperm(pts.shape[0], generator=g)[:n]]
        return pts.to(torch.float32)


def _scene_from_objects(objects: Sequence[tuple[str, str]]) -> ToyScene:
    if len(objects) == 1:
        colour, shape = objects[0]
        return ToyScene(_canonical_object(colour, shape), (ToyPrimitive(shape, colour),))
    (c_top, s_top), (c_bot, s_bot) = objects
    s = COMPOSITE_SCALE
    z_bot = COMPOSITE_FLOOR - s * SHAPE_Z_EXTENT[s_bot][0]
    bottom_top = z_bot + s * SHAPE_Z_EXTENT[s_bot][1]
    z_top = bottom_top - s * SHAPE_Z_EXTENT[s_top][0]
    prompt = f"{_canonical_object(c_top, s_top)} on top of {_canonical_object(c_bot, s_bot)}"
    return ToyScene(prompt, (ToyPrimitive(s_top, c_top, s, z_top), ToyPrimitive(s_bot, c_bot, s, z_bot)))


def _error_message(prompt: str) -> str:
    return (
        f"the toy world does not understand the prompt {prompt!r}. "
        f"It understands {GRAMMAR} (lower case; a trailing period is ignored; 'an orange' is accepted). "
        f"Colours: {', '.join(COLOURS)}. Shapes: {', '.join(SHAPES)}. "
        f"Examples: 'a red sphere', 'a blue cone on top of a yellow cube'."
    )


def parse_prompt(prompt: str) -> ToyScene:
    """A toy prompt -> its scene; anything else raises ToyPromptError naming the grammar.

    Surrounding whitespace, repeated spaces, upper case and one trailing period are forgiven.
    """
    if not isinstance(prompt, str):
        raise ToyPromptError(_error_message(repr(prompt)))
    text = " ".join(prompt.strip().lower().split())
    if text.endswith("."):
        text = text[:-1].rstrip()
    match = _PROMPT_RE.match(text)
    if match is None:
        raise ToyPromptError(_error_message(prompt))
    groups = match.groups()
    objects = [(groups[0], groups[1])]
    if groups[2] is not None:
        objects.append((groups[2], groups[3]))
    return _scene_from_objects(objects)
