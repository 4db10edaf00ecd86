"""Quality of synthetic data: against ground truth on the toy world, and checks that need none.

Ground-truth checks (toy world only): a caption is compared with the image's scene; a target text
with the scene after the modification *as its words say* (`toylang.interpret`), so that an
MLLM that proposes an edit and then describes something else is caught.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np

from . import toylang as tl
from . import toyworld as tw
from .mllm import ChatRequest, MLLMBackend
from .prompts import ContractError, get_prompt

KIND_PATTERNS = {
    "background": r"\bbackground|backdrop\b",
    "remove": r"^(remove|take away|delete|get rid of)\b",
    "add": r"^(add|also include|there should also be|put an?\b)",
    "size": r"\b(bigger|larger|enlarge|smaller|shrink|size)\b",
    "position": r"\b(move|shift|put the|should be (at|in|on) the)\b",
    "shape": rf"\b(into an?|to an?|with an?|an?) ({'|'.join(tw.SHAPES)})\b",
    "color": rf"\b({'|'.join(tw.COLORS)})\b",
}


def modification_kind(text: str) -> str:
    """The kind of edit a modification text asks for, from its words alone (any data)."""
    t = text.lower().strip()
    for kind, pattern in KIND_PATTERNS.items():
        if re.search(pattern, t):
            return kind
    return "other"


def record_checks(rec: dict, scene: tw.Scene) -> dict:
    """Ground-truth checks of one synthetic record against the scene of its image."""
    out = {"caption_exact": 0, "caption_invented": 0, "caption_lost": 0, "mod_understood": 0,
           "target_exact": 0, "target_invented": 0, "target_lost": 0, "target_unchanged": 0}
    if rec.get("caption"):
        c = tl.compare_description(rec["caption"], scene)
        out.update(caption_exact=c["exact"], caption_invented=int(c["invented"] > 0),
                   caption_lost=int(c["lost"] > 0))
    mod = tl.interpret(scene, rec["modification"]) if rec.get("modification") else None
    if mod is None or not rec.get("target"):
        return out
    try:
        target_scene = tw.apply_modification(scene, mod)
    except ValueError:
        return out
    t = tl.compare_description(rec["target"], target_scene)
    same_as_before = tl.compare_description(rec["target"], scene)["exact"]
    out.update(mod_understood=1, target_exact=t["exact"], target_invented=int(t["invented"] > 0),
               target_lost=int(t["lost"] > 0), target_unchanged=same_as_before)
    return out


def store_quality(records: Sequence[dict], scene_of) -> dict:
    """Mean of `record_checks` over accepted records, in percent; `scene_of(path)` gives a scene."""
    rows = [record_checks(r, scene_of(r["image"])) for r in records if r.get("status") == "accepted"]
    if not rows:
        return {}
    return {k: 100.0 * float(np.mean([r[k] for r in rows])) for k in rows[0]}


def propose_modifications(backend: MLLMBackend, images: Sequence[str],
                          prompt_id: str = "modification/v1") -> list[str | None]:
    """The MLLM's proposed modification for each image (None where the answer broke the contract)."""
    p = get_prompt(prompt_id)
    out = []
    for ans in backend.generate([ChatRequest(str(im), p.render(), str(im), p.system) for im in images]):
        try:
            out.append(p.parse(ans)["modification"] if isinstance(ans, str) else None)
        except ContractError:
            out.append(None)
    return out


def evaluate_prompt(backend: MLLMBackend, prompt_id: str, images: Sequence[str], scene_of,
                    modifications: Sequence[str] | None = None) -> dict:
    """Run one prompt on `images` and measure its answers against ground truth (percent).

    Caption prompts: exact / invented / lost. Target prompts (given `modifications`): the same
    measured against the scene after each modification, plus `unchanged` (the edit ignored).
    """
    p = get_prompt(prompt_id)
    if modifications:   # images whose modification could not be proposed are left out
        kept = [(im, m) for im, m in zip(images, modifications) if m]
        images, modifications = [im for im, _ in kept], [m for _, m in kept]
    fills = [{"modification": m} for m in modifications] if modifications else [{} for _ in images]
    answers = backend.generate([ChatRequest(str(im), p.render(**f), str(im), p.system)
                                for im, f in zip(images, fills)])
    stats = Counter()
    for im, f, ans in zip(images, fills, answers):
        try:
            text = p.parse(ans)[p.fields[0]] if isinstance(ans, str) else None
        except ContractError:
            text = None
        if text is None:
            stats["contract_failures"] += 1
            continue
        scene = scene_of(im)
        if "modification" in f:
            mod = tl.interpret(scene, f["modification"])
            if mod is None:
                continue
            stats["unchanged"] += tl.compare_description(text, scene)["exact"]
            scene = tw.apply_modification(scene, mod)
        c = tl.compare_description(text, scene)
        stats["exact"] += c["exact"]
        stats["invented"] += c["invented"] > 0
        stats["lost"] += c["lost"] > 0
        stats["underspecified"] += c["underspecified"] > 0
    n = len(images)
    keys = ["exact", "invented", "lost", "underspecified", "contract_failures"]
    if modifications:
        keys.insert(3, "unchanged")
    return {k: 100.0 * stats[k] / n for k in keys}


def text_report(records: Sequence[dict]) -> dict:
    """Checks that need no ground truth: counts, lengths, duplicates, kinds of modification."""
    acc = [r for r in records if r.get("status") == "accepted"]
    mods = [r["modification"] for r in acc]
    dup = sum(c - 1 for c in Counter(m.lower() for m in mods).values() if c > 1)
    return {
        "records": len(records), "accepted": len(acc),
        "caption_words": [len(r["caption"].split()) for r in acc],
        "modification_words": [len(m.split()) for m in mods],
        "target_words": [len(r["target"].split()) for r in acc],
        "duplicate_modifications": dup,
        "kinds": Counter(modification_kind(m) for m in mods),
        "target_equals_caption": sum(r["target"].strip().lower() == r["caption"].strip().lower() for r in acc),
    }


def auto_curation_rules(rec: dict) -> str | None:
    """A reason to reject a record without looking at ground truth, or None.

    Rules a user can apply to real data too: the target text repeats the caption (the edit was not
    applied), or the modification asks for a value the target text never mentions."""
    if rec.get("status") != "accepted":
        return None
    cap, tgt, mod = rec["caption"].strip().lower(), rec["target"].strip().lower(), rec["modification"].lower()
    if cap == tgt:
        return "target repeats the caption"
    kind = modification_kind(mod)
    if kind in ("color", "shape", "background"):
        vocab = {"color": tw.COLORS, "shape": tw.SHAPES, "background": tw.BACKGROUNDS}[kind]
        asked = [w for w in re.findall(r"[a-z]+", mod.split(" instead")[0]) if w in vocab]
        if asked and asked[-1] not in tgt:
            return f"target never mentions '{asked[-1]}'"
    return None


def apply_auto_curation(store) -> Counter:
    """Reject, in the curation file, every record `auto_curation_rules` flags and nobody has
    curated yet. Returns the counts by rule; running it twice adds nothing."""
    already = {c["id"] for c in store.curation()}
    reasons = Counter()
    for rec in store.records():
        why = auto_curation_rules(rec)
        if why and rec["id"] not in already:
            store.curate(rec["id"], "reject")
            reasons[why.split("'")[0].strip()] += 1
    return reasons
