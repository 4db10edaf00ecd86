"""Reading toy-world text back: descriptions to scenes, modification texts to edits.

The simulated MLLM uses `interpret` to understand a modification as a reader would (from the words
only, against the scene it perceives); the quality reports use `parse_description` to compare a
synthetic text with the ground-truth scene.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from . import toyworld as tw

_COLOR = "|".join(tw.COLORS)
_SHAPE = "|".join(tw.SHAPES)
_SIZE = "|".join(tw.SIZES)
_POS_WORDS = sorted(tw.POSITIONS, key=len, reverse=True)
_POS = "|".join(_POS_WORDS)
_BG = "|".join(tw.BACKGROUNDS)

_OBJECT = re.compile(rf"\b(?:a|an)\s+(?:({_SIZE})\s+)?(?:({_COLOR})\s+)?({_SHAPE})"
                     rf"(?:\s+(?:at|in|on)\s+the\s+({_POS}))?", re.I)
_BACKGROUND = re.compile(rf"\b({_BG})\s+(?:background|backdrop)", re.I)


@dataclass(frozen=True)
class Mention:
    """An object as a text mentions it; None where the text does not say."""
    shape: str
    color: str | None = None
    size: str | None = None
    pos: int | None = None

    def matches(self, o: tw.Obj) -> bool:
        return (self.shape == o.shape and self.color in (None, o.color) and self.size in (None, o.size)
                and self.pos in (None, o.pos))


def parse_description(text: str) -> tuple[list[Mention], str | None]:
    """The objects and the background a description mentions."""
    mentions = []
    for size, color, shape, pos in _OBJECT.findall(text):
        mentions.append(Mention(shape.lower(), color.lower() or None, size.lower() or None,
                                tw.POSITIONS.index(pos.lower()) if pos else None))
    bg = _BACKGROUND.search(text)
    return mentions, (bg.group(1).lower() if bg else None)


def compare_description(text: str, scene: tw.Scene) -> dict:
    """How a description differs from the scene it should describe.

    Returns counts: `invented` (mentions no object of the scene fits), `lost` (scene objects no
    mention fits), `wrong_background`, `underspecified` (mentions without size or position), and
    `exact` (everything matches one to one with every attribute given).
    """
    mentions, bg = parse_description(text)
    free = list(scene.objects)
    invented = 0
    for m in sorted(mentions, key=lambda m: -sum(v is not None for v in (m.color, m.size, m.pos))):
        hit = next((o for o in free if m.matches(o)), None)
        if hit is None:
            invented += 1
        else:
            free.remove(hit)
    under = sum(1 for m in mentions if m.size is None or m.pos is None or m.color is None)
    wrong_bg = int(bg is not None and bg != scene.background)
    return {"invented": invented, "lost": len(free), "wrong_background": wrong_bg,
            "missing_background": int(bg is None), "underspecified": under,
            "exact": int(invented == 0 and not free and bg == scene.background and under == 0)}


def describe_scene_mentions(mentions: list[Mention], background: str | None) -> str:
    parts = []
    for m in mentions:
        words = " ".join(w for w in (m.size, m.color, m.shape) if w)
        art = "an" if words[0] in "aeiou" else "a"
        parts.append(f"{art} {words}" + (f" {tw.where(m.pos)}" if m.pos is not None else ""))
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if background:
        text += f" on a {background} background"
    return text[0].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- modifications

_REF = re.compile(rf"\bthe\s+(?:({_SIZE})\s+)?(?:({_COLOR})\s+)?({_SHAPE})"
                  rf"(?:\s+(?:at|in|on)\s+the\s+({_POS}))?", re.I)


def _resolve(scene: tw.Scene, text: str) -> tuple[int | None, int, int]:
    """The object a text refers to ('the red circle') and the span of the words that name it.

    A position after the shape ('the red circle at the top') is part of the name only when the
    name without it is ambiguous, as the toy world's referring expressions are built."""
    m = _REF.search(text)
    if not m:
        return None, 0, 0
    size, color, shape, pos = (g.lower() if g else None for g in m.groups())
    for with_pos in (False, True):
        mention = Mention(shape, color, size, tw.POSITIONS.index(pos) if with_pos and pos else None)
        hits = [i for i, o in enumerate(scene.objects) if mention.matches(o)]
        if len(hits) == 1:
            return hits[0], m.start(), (m.end() if with_pos else m.end(3))
        if not pos:
            break
    return None, m.start(), m.end()


def _position_after(text: str) -> int | None:
    m = re.search(rf"\b(?:to|at|in|on)\s+the\s+({_POS})\b", text, re.I)
    return tw.POSITIONS.index(m.group(1).lower()) if m else None


def interpret(scene: tw.Scene, text: str) -> tw.Modification | None:
    """The edit a modification text asks for, read against `scene`; None if it cannot be read.

    Handles the phrasings of the toy world's CIRR/CIRCO-style instructions ("make the red circle
    blue", "add a small pink star at the top", ...). Only the words and the scene are used."""
    t = text.lower().strip()
    if "background" in t or "backdrop" in t:
        bg = re.search(rf"\b({_BG})\b", t)
        return tw.Modification("background", None, bg.group(1)) if bg else None
    if re.match(r"^(remove|take away|delete|get rid of)\b", t):
        idx, _, _ = _resolve(scene, t)
        return tw.Modification("remove", idx) if idx is not None else None
    add = re.match(r"^(add|also include|put|there should also be)\s+(a|an)\s", t)
    if add:
        objs, _ = parse_description(t)
        if not objs:
            return None
        o = objs[0]
        cells = scene.free_cells()
        pos = o.pos if o.pos is not None else (cells[len(cells) // 2] if cells else None)
        if pos is None or pos not in cells:
            return None
        return tw.Modification("add", None, tw.Obj(pos, o.shape, o.color or "white", o.size or "large"))
    idx, start, end = _resolve(scene, t)
    if idx is None:
        return None
    rest = t[:start] + " " + t[end:]
    if re.search(r"\b(bigger|larger|enlarge|increase the size)\b", t):
        return tw.Modification("size", idx, "large")
    if re.search(r"\b(smaller|shrink|reduce the size)\b", t):
        return tw.Modification("size", idx, "small")
    if re.search(r"\b(move|shift)\b", t) or re.search(r"\b(put|should be)\b", rest) and _position_after(rest) is not None:
        pos = _position_after(rest)
        return tw.Modification("position", idx, pos) if pos is not None else None
    shape = re.search(rf"\b({_SHAPE})\b", rest)
    if shape:
        return tw.Modification("shape", idx, shape.group(1))
    color = re.search(rf"\b({_COLOR})\b", rest)
    if color:
        return tw.Modification("color", idx, color.group(1))
    return None


_FIQ_SIZE = {"large": r"\b(bigger|larger)\b", "small": r"\b(smaller|tinier)\b"}


def interpret_relative(scene: tw.Scene, captions: list[str]) -> tw.Scene | None:
    """FashionIQ-style relative captions ("is blue and larger", "has a teal background") applied
    to a one-object scene."""
    if len(scene.objects) != 1:
        return None
    o, bg = scene.objects[0], scene.background
    text = " and ".join(captions).lower()
    bgm = re.search(rf"\b({_BG})\s+background", text)
    if bgm:
        bg = bgm.group(1)
        text = text.replace(bgm.group(0), " ")
    for size, pattern in _FIQ_SIZE.items():
        if re.search(pattern, text):
            o = replace(o, size=size)
    shape = re.search(rf"\b({_SHAPE})\b", text)
    if shape:
        o = replace(o, shape=shape.group(1))
    color = re.search(rf"\b({_COLOR})\b", text)
    if color:
        o = replace(o, color=color.group(1))
    pos = re.search(rf"\b(?:at|in|on)\s+the\s+({_POS})\b", text)
    if pos:
        o = replace(o, pos=tw.POSITIONS.index(pos.group(1)))
    return tw.make_scene(bg, [o])


_IMPERATIVE = re.compile(r"^(make|change|turn|replace|paint|enlarge|increase|shrink|reduce|move|put|shift|"
                         r"use|add|also include|there should also be|remove|take away|delete|get rid of|the)\b")


def apply_text(scene: tw.Scene, text: str) -> tw.Scene | None:
    """The scene a request describes: an instruction ("make the red circle blue") or
    FashionIQ-style relative statements ("is blue and has a teal background"). None if unread."""
    t = text.lower().strip()
    if _IMPERATIVE.match(t):
        mod = interpret(scene, t)
        if mod is None:
            return None
        try:
            return tw.apply_modification(scene, mod)
        except ValueError:
            return None
    return interpret_relative(scene, re.split(r"\s+and\s+", t))
