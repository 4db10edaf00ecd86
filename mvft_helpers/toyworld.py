"""The toy shapes world: scenes, rendering, captions and modifications.

A scene is a background plus 1 to 3 objects, each with a shape, colour, size and a cell of a 3x3
grid. Everything here is a pure function of its inputs (and of an explicit `random.Random` where
phrasing varies), so the same seed always gives the same images and texts.

Only the world generator, the simulated MLLM and the quality reports may look at scenes; training
and retrieval code sees images and texts, as it would on real data.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 91, 214),
    "yellow": (240, 215, 30),
    "purple": (148, 62, 189),
    "orange": (245, 130, 25),
    "pink": (240, 125, 190),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
BACKGROUNDS = {
    "gray": (118, 118, 118),
    "black": (18, 18, 18),
    "beige": (222, 206, 168),
    "teal": (28, 104, 110),
}
# Grid cells 0..8, row-major; the phrase used after "at"/"in"/"on" in natural text.
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
MOD_KINDS = ("color", "shape", "size", "position", "background", "add", "remove")
MAX_OBJECTS = 3


@dataclass(frozen=True, order=True)
class Obj:
    pos: int  # first, so that sorting a scene's objects sorts them by cell
    shape: str
    color: str
    size: str

    def phrase(self, with_size: bool = True) -> str:
        words = ([self.size] if with_size else []) + [self.color, self.shape]
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "pos": self.pos}


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]

    def __post_init__(self):
        validate_scene(self)

    @property
    def key(self) -> str:
        """Exact identity of a scene (what it looks like, pixel for pixel)."""
        objs = ";".join(f"{o.pos}:{o.size}:{o.color}:{o.shape}" for o in self.objects)
        return f"{self.background}|{objs}"

    @property
    def content_key(self) -> str:
        """Identity up to object positions: what a CIRCO-style target description constrains."""
        objs = ";".join(sorted(f"{o.size}:{o.color}:{o.shape}" for o in self.objects))
        return f"{self.background}|{objs}"

    def free_cells(self) -> list[int]:
        used = {o.pos for o in self.objects}
        return [c for c in range(9) if c not in used]

    def to_dict(self) -> dict:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    @staticmethod
    def from_dict(d: dict) -> "Scene":
        objs = tuple(sorted(Obj(pos=int(o["pos"]), shape=o["shape"], color=o["color"], size=o["size"])
                            for o in d["objects"]))
        return Scene(background=d["background"], objects=objs)


def validate_scene(scene: Scene) -> None:
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}; allowed: {sorted(BACKGROUNDS)}")
    if not 1 <= len(scene.objects) <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(scene.objects)}")
    cells = [o.pos for o in scene.objects]
    if len(set(cells)) != len(cells):
        raise ValueError(f"two objects share a grid cell: {cells}")
    if list(scene.objects) != sorted(scene.objects):
        raise ValueError("scene objects must be sorted by cell; build scenes with make_scene()")
    for o in scene.objects:
        if o.shape not in SHAPES:
            raise ValueError(f"unknown shape {o.shape!r}; allowed: {list(SHAPES)}")
        if o.color not in COLORS:
            raise ValueError(f"unknown colour {o.color!r}; allowed: {list(COLORS)}")
        if o.size not in SIZES:
            raise ValueError(f"unknown size {o.size!r}; allowed: {list(SIZES)}")
        if not 0 <= o.pos < 9:
            raise ValueError(f"position must be a grid cell 0..8, got {o.pos}")


def make_scene(background: str, objects: Iterable[Obj]) -> Scene:
    return Scene(background=background, objects=tuple(sorted(objects)))


def random_scene(rng: random.Random, n_objects: int | None = None,
                 shapes: Sequence[str] = SHAPES,
                 n_weights: Sequence[float] = (0.25, 0.4, 0.35)) -> Scene:
    n = n_objects or rng.choices((1, 2, 3), weights=n_weights)[0]
    cells = rng.sample(range(9), n)
    objs = [Obj(pos=c, shape=rng.choice(shapes), color=rng.choice(list(COLORS)),
                size=rng.choice(SIZES)) for c in cells]
    return make_scene(rng.choice(list(BACKGROUNDS)), objs)


# ----------------------------------------------------------------------------- rendering

def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.82
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.36
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}; allowed: {list(SHAPES)}")


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw a scene as an RGB image of `size` x `size` pixels (antialiased by supersampling)."""
    big = size * supersample
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cell = big / 3
    for o in scene.objects:
        row, col = divmod(o.pos, 3)
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        r = cell * (0.44 if o.size == "large" else 0.25)
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_shape_polygon(o.shape, cx, cy, r), fill=fill)
    return img.resize((size, size), Image.LANCZOS)


# ----------------------------------------------------------------------------- captions

def where(pos: int) -> str:
    """'at the top left', 'in the center', 'on the right', ... for a grid cell."""
    name = POSITIONS[pos]
    if name == "center":
        return "in the center"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"at the {name}"


_CAPTION_OPENERS = ("{objs} {bg}.", "A picture of {objs} {bg}.", "An image showing {objs} {bg}.",
                    "There is {objs} {bg}.")
_BG_PHRASES = ("on a {bg} background", "against a {bg} background", "over a {bg} backdrop")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """A natural English description of the whole scene.

    Without `rng` the canonical phrasing (used for target texts and ground truth); with `rng` one of
    several phrasings and object orders (used for the pretraining captions).
    """
    return describe(scene.objects, scene.background, rng)


def describe(objects: Sequence[Obj], background: str, rng: random.Random | None = None) -> str:
    """`caption` for any list of objects (also more than a scene may hold: a described, possibly
    hallucinated, scene)."""
    objs = list(objects)
    opener, bgp = _CAPTION_OPENERS[0], _BG_PHRASES[0]
    if rng is not None:
        rng.shuffle(objs)
        opener, bgp = rng.choice(_CAPTION_OPENERS), rng.choice(_BG_PHRASES)
    parts = [f"{_article(o.phrase())} {where(o.pos)}" for o in objs]
    text = opener.format(objs=_join(parts), bg=bgp.format(bg=background))
    return text[0].upper() + text[1:]


def refer(scene: Scene, index: int, rng: random.Random | None = None) -> str:
    """An unambiguous name for object `index` of `scene`: colour + shape ("the red circle") when
    that is unique, else the shortest form that is; with `rng`, any unambiguous form."""
    o = scene.objects[index]
    others = [p for i, p in enumerate(scene.objects) if i != index]
    candidates = [
        (lambda p: p.shape == o.shape, f"the {o.shape}"),
        (lambda p: (p.color, p.shape) == (o.color, o.shape), f"the {o.color} {o.shape}"),
        (lambda p: (p.size, p.color, p.shape) == (o.size, o.color, o.shape),
         f"the {o.size} {o.color} {o.shape}"),
    ]
    options = [text for clash, text in candidates if not any(clash(p) for p in others)]
    if not options:
        return f"the {o.color} {o.shape} {where(o.pos)}"
    # Prefer the colour + shape form: it is what people write most; vary only when asked.
    if rng is not None:
        return rng.choice(options)
    return options[min(1, len(options) - 1)]


# ----------------------------------------------------------------------------- modifications

@dataclass(frozen=True)
class Modification:
    """One edit of a scene. `index` names an object of the source scene (not used by add and
    background); `value` is the new colour, shape, size, cell, background, or the added Obj."""
    kind: str
    index: int | None = None
    value: object = None

    def to_dict(self) -> dict:
        value = self.value.to_dict() if isinstance(self.value, Obj) else self.value
        return {"kind": self.kind, "index": self.index, "value": value}

    @staticmethod
    def from_dict(d: dict) -> "Modification":
        value = d["value"]
        if d["kind"] == "add":
            value = Obj(pos=int(value["pos"]), shape=value["shape"], color=value["color"],
                        size=value["size"])
        return Modification(kind=d["kind"], index=d["index"], value=value)


def apply_modification(scene: Scene, mod: Modification) -> Scene:
    if mod.kind not in MOD_KINDS:
        raise ValueError(f"unknown modification kind {mod.kind!r}; allowed: {list(MOD_KINDS)}")
    objs = list(scene.objects)
    if mod.kind == "background":
        return make_scene(str(mod.value), objs)
    if mod.kind == "add":
        return make_scene(scene.background, objs + [mod.value])
    o = objs[mod.index]
    if mod.kind == "remove":
        del objs[mod.index]
    else:
        field = {"color": "color", "shape": "shape", "size": "size", "position": "pos"}[mod.kind]
        objs[mod.index] = replace(o, **{field: mod.value})
    return make_scene(scene.background, objs)


_TEMPLATES = {
    "color": ("make {ref} {v}", "change the color of {ref} to {v}", "{ref} should be {v} instead",
              "paint {ref} {v}", "turn {ref} {v}"),
    "shape": ("turn {ref} into a {v}", "change {ref} to a {v}", "replace {ref} with a {c} {v}",
              "make {ref} a {v} instead"),
    "size_large": ("make {ref} bigger", "enlarge {ref}", "{ref} should be larger",
                   "increase the size of {ref}"),
    "size_small": ("make {ref} smaller", "shrink {ref}", "{ref} should be smaller",
                   "reduce the size of {ref}"),
    "position": ("move {ref} to the {v}", "put {ref} {w}", "{ref} should be {w}",
                 "shift {ref} to the {v}"),
    "background": ("change the background to {v}", "make the background {v}",
                   "put it on a {v} background", "use a {v} background instead"),
    "add": ("add {a} {w}", "also include {a} {w}", "put {a} {w}", "there should also be {a} {w}"),
    "add_nopos": ("add {a}", "also include {a}", "there should also be {a}"),
    "remove": ("remove {ref}", "take away {ref}", "delete {ref}", "get rid of {ref}"),
}


def describe_modification(scene: Scene, mod: Modification, rng: random.Random,
                          with_position: bool = True) -> str:
    """A phrasing of `mod` written against the source `scene`, chosen by `rng`."""
    ref = refer(scene, mod.index, rng) if mod.index is not None else ""
    if mod.kind == "size":
        key = "size_large" if mod.value == "large" else "size_small"
        return rng.choice(_TEMPLATES[key]).format(ref=ref)
    if mod.kind == "add":
        key = "add" if with_position else "add_nopos"
        a = _article(mod.value.phrase())
        return rng.choice(_TEMPLATES[key]).format(a=a, w=where(mod.value.pos))
    if mod.kind == "position":
        v = POSITIONS[mod.value]
        return rng.choice(_TEMPLATES["position"]).format(ref=ref, v=v, w=where(mod.value))
    color = scene.objects[mod.index].color if mod.index is not None else ""
    return rng.choice(_TEMPLATES[mod.kind]).format(ref=ref, v=mod.value, c=color)


def valid_kinds(scene: Scene) -> list[str]:
    kinds = ["color", "shape", "size", "background"]
    if scene.free_cells():
        kinds.append("position")
        if len(scene.objects) < MAX_OBJECTS:
            kinds.append("add")
    if len(scene.objects) > 1:
        kinds.append("remove")
    return kinds


def sample_modification(scene: Scene, rng: random.Random, kinds: Sequence[str] = MOD_KINDS,
                        shapes: Sequence[str] = SHAPES) -> Modification:
    """A random modification of one of `kinds` that is valid for `scene` and changes it."""
    unknown = set(kinds) - set(MOD_KINDS)
    if unknown:
        raise ValueError(f"unknown modification kinds {sorted(unknown)}; allowed: {list(MOD_KINDS)}")
    possible = [k for k in valid_kinds(scene) if k in kinds]
    if "shape" in possible and len(shapes) < 2:
        possible.remove("shape")
    if not possible:
        raise ValueError(f"none of the kinds {list(kinds)} applies to scene {scene.key}")
    kind = rng.choice(possible)
    idx = rng.randrange(len(scene.objects))
    o = scene.objects[idx]
    if kind == "color":
        return Modification("color", idx, rng.choice([c for c in COLORS if c != o.color]))
    if kind == "shape":
        return Modification("shape", idx, rng.choice([s for s in shapes if s != o.shape]))
    if kind == "size":
        return Modification("size", idx, "small" if o.size == "large" else "large")
    if kind == "position":
        return Modification("position", idx, rng.choice(scene.free_cells()))
    if kind == "background":
        return Modification("background", None,
                            rng.choice([b for b in BACKGROUNDS if b != scene.background]))
    if kind == "add":
        new = Obj(pos=rng.choice(scene.free_cells()), shape=rng.choice(shapes),
                  color=rng.choice(list(COLORS)), size=rng.choice(SIZES))
        return Modification("add", None, new)
    return Modification("remove", idx, None)
