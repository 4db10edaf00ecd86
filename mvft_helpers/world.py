"""Writes a toy world to disk: an unlabeled pool, pretraining pairs, and three benchmarks in the
exact on-disk formats of CIRR (rc2), CIRCO and FashionIQ.

    from mvft_helpers.world import WorldConfig, generate_world
    info = generate_world("data/toy", WorldConfig(seed=0))

Layout under the root (each benchmark folder is what the real loaders expect as their root):

    toyworld.json                       manifest: generator version, config, counts (written last)
    ground_truth/scenes.jsonl           the scene of every image (read via load_ground_truth only)
    ground_truth/queries.jsonl          the structured modification of every benchmark query
    unlabeled/images/000000.png ...     the unlabeled pool (images only)
    pretrain/images/*.png, pretrain/captions.jsonl
    cirr/captions/cap.rc2.{val,test1}.json, cirr/image_splits/split.rc2.{val,test1}.json,
    cirr/dev/*.png, cirr/test1/*.png
    circo/annotations/{val,test}.json,
    circo/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json,
    circo/COCO2017_unlabeled/unlabeled2017/*.jpg
    fashioniq/captions/cap.{dress,shirt,toptee}.{val,test}.json,
    fashioniq/image_splits/split.{dress,shirt,toptee}.{val,test}.json, fashioniq/images/*.png

Every image in the world is a distinct scene, so no image of the pool or of the pretraining pairs
reappears (even re-rendered) in a benchmark.
"""
from __future__ import annotations

import json
import random
import string
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from . import toyworld as tw
from .io import atomic_save_image, atomic_write_json, atomic_write_text, read_json, read_jsonl

GENERATOR_VERSION = 1
MANIFEST = "toyworld.json"
PARTIAL = "toyworld.partial.json"
FIQ_CATEGORIES = {"dress": ("triangle", "diamond"), "shirt": ("square", "cross"),
                  "toptee": ("circle", "star")}
FIQ_KINDS = ("color", "size", "background", "shape", "position")
CIRCO_KINDS = ("color", "shape", "size", "background", "add", "remove")
CIRCO_ASPECTS = {"color": ["compare_change"], "shape": ["compare_change"],
                 "size": ["comparative_statement"], "background": ["spatial_relations_background"],
                 "add": ["addition"], "remove": ["negation"]}


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    image_size: int = 64
    n_pool: int = 2000
    n_pretrain: int = 4000
    cirr_val_sets: int = 150
    cirr_test_sets: int = 60
    cirr_queries_per_set: int = 2
    circo_val_queries: int = 120
    circo_test_queries: int = 60
    circo_distractors: int = 1200
    fiq_val_queries: int = 120
    fiq_test_queries: int = 40
    fiq_gallery_factor: float = 2.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "seed":
                continue
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"WorldConfig.{f.name} must be a non-negative number, got {v!r}")
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be between 16 and 512 pixels, got {self.image_size}")
        if self.cirr_queries_per_set not in (1, 2):
            raise ValueError(f"cirr_queries_per_set must be 1 or 2, got {self.cirr_queries_per_set}")
        if self.fiq_gallery_factor < 1.0:
            raise ValueError("fiq_gallery_factor must be at least 1.0 (the gallery holds every "
                             f"candidate and target), got {self.fiq_gallery_factor}")

    @classmethod
    def from_dict(cls, d: dict) -> "WorldConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown WorldConfig fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**d)


@dataclass
class WorldInfo:
    root: Path
    config: WorldConfig
    counts: dict

    @property
    def cirr(self) -> Path:
        return self.root / "cirr"

    @property
    def circo(self) -> Path:
        return self.root / "circo"

    @property
    def fashioniq(self) -> Path:
        return self.root / "fashioniq"

    @property
    def pool(self) -> Path:
        return self.root / "unlabeled" / "images"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"


def open_world(root: str | Path) -> WorldInfo:
    """The toy world already generated at `root` (error if there is none)."""
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"no complete toy world at {root} (missing {manifest}); "
                                "generate one with mvft_helpers.world.generate_world(root, config)")
    m = read_json(manifest)
    return WorldInfo(root, WorldConfig.from_dict(m["config"]), m["counts"])


def _describe_config(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def _check_target(root: Path, config: WorldConfig) -> WorldInfo | None:
    """Reuse a complete world of the same config, refuse anything else that is in the way."""
    want = {"generator_version": GENERATOR_VERSION, "config": asdict(config)}
    for marker in (MANIFEST, PARTIAL):
        p = root / marker
        if not p.exists():
            continue
        have = read_json(p)
        if {k: have.get(k) for k in want} == want:
            return open_world(root) if marker == MANIFEST else None
        diff = {k: (have["config"].get(k), v) for k, v in asdict(config).items()
                if have.get("config", {}).get(k) != v}
        raise ValueError(
            f"{root} already holds a toy world made with another configuration "
            f"(generator version {have.get('generator_version')}; differing fields, as (there, "
            f"asked): {diff or 'generator version'}). Nothing was overwritten. Use another folder, "
            f"or delete this one first (rm -r {root}).")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and holds no toy world ({MANIFEST} is missing). "
                         "Nothing was overwritten; choose an empty or new folder.")
    return None


def generate_world(root: str | Path, config: WorldConfig | None = None,
                   progress: bool = True) -> WorldInfo:
    """Generate the toy world of `config` into `root`, or reuse it if it is already there."""
    config = config or WorldConfig()
    root = Path(root)
    existing = _check_target(root, config)
    if existing is not None:
        return existing
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / PARTIAL, {"generator_version": GENERATOR_VERSION,
                                       "config": asdict(config)})
    counts = _Generator(root, config, progress).run()
    atomic_write_json(root / MANIFEST, {"generator_version": GENERATOR_VERSION,
                                        "config": asdict(config), "counts": counts}, indent=2)
    (root / PARTIAL).unlink()
    return WorldInfo(root, config, counts)


class _Generator:
    def __init__(self, root: Path, config: WorldConfig, progress: bool):
        self.root, self.cfg = root, config
        self.used: set[str] = set()
        self.scenes: list[dict] = []      # ground truth of every image written
        self.queries: list[dict] = []     # structured modification of every benchmark query
        c = config
        total = (c.n_pool + c.n_pretrain + 6 * (c.cirr_val_sets + c.cirr_test_sets)
                 + int(3 * c.fiq_gallery_factor * (c.fiq_val_queries + c.fiq_test_queries))
                 + c.circo_distractors + 6 * (c.circo_val_queries + c.circo_test_queries))
        self.bar = tqdm(total=total, desc="rendering toy world", unit="img", disable=not progress)

    def rng(self, part: str) -> random.Random:
        # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
        return random.Random(f"mvft-toyworld/{self.cfg.seed}/{part}")

    # -- scenes ---------------------------------------------------------------------------
    def claim(self, scene: tw.Scene) -> bool:
        if scene.key in self.used:
            return False
        self.used.add(scene.key)
        return True

    def fresh(self, rng: random.Random, **kw) -> tw.Scene:
        for _ in range(10_000):
            s = tw.random_scene(rng, **kw)
            if self.claim(s):
                return s
        raise RuntimeError("the toy world ran out of distinct scenes; lower the sizes in WorldConfig")

    def modified(self, rng: random.Random, scene: tw.Scene, kinds: Sequence[str] = tw.MOD_KINDS,
                 shapes: Sequence[str] = tw.SHAPES, accept: Callable[[tw.Scene], bool] = lambda s: True):
        """A fresh scene one random modification away from `scene`, and that modification."""
        for _ in range(200):
            mod = tw.sample_modification(scene, rng, kinds, shapes)
            target = tw.apply_modification(scene, mod)
            if target.key not in self.used and accept(target):
                self.claim(target)
                return target, mod
        return None, None

    def write(self, scene: tw.Scene, rel: str, part: str) -> None:
        img = tw.render(scene, self.cfg.image_size)
        kw = {"quality": 95} if rel.endswith(".jpg") else {}
        atomic_save_image(self.root / rel, img, **kw)
        self.scenes.append({"path": rel, "part": part, "scene": scene.to_dict()})
        self.bar.update(1)

    # -- parts ----------------------------------------------------------------------------
    def run(self) -> dict:
        counts = {"fashioniq": self.fashioniq(), "cirr": self.cirr(), "circo": self.circo(),
                  "unlabeled": self.pool(), "pretrain": self.pretrain()}
        gt = self.root / "ground_truth"
        atomic_write_text(gt / "scenes.jsonl", "".join(json.dumps(r) + "\n" for r in self.scenes))
        atomic_write_text(gt / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in self.queries))
        self.bar.total = self.bar.n   # the total was an estimate (CIRCO galleries vary in size)
        self.bar.refresh()
        self.bar.close()
        return counts

    def pool(self) -> dict:
        rng = self.rng("unlabeled")
        for i in range(self.cfg.n_pool):
            self.write(self.fresh(rng), f"unlabeled/images/{i:06d}.png", "unlabeled")
        return {"images": self.cfg.n_pool}

    def pretrain(self) -> dict:
        rng = self.rng("pretrain")
        lines = []
        for i in range(self.cfg.n_pretrain):
            s = self.fresh(rng)
            rel = f"images/{i:06d}.png"
            self.write(s, f"pretrain/{rel}", "pretrain")
            lines.append(json.dumps({"image": rel, "caption": tw.caption(s, rng)}) + "\n")
        atomic_write_text(self.root / "pretrain" / "captions.jsonl", "".join(lines))
        return {"pairs": self.cfg.n_pretrain}

    def cirr(self) -> dict:
        counts, pairid = {}, 0
        for split, prefix, n_sets in (("val", "dev", self.cfg.cirr_val_sets),
                                      ("test1", "test1", self.cfg.cirr_test_sets)):
            rng = self.rng(f"cirr/{split}")
            captions, image_split = [], {}
            for set_id in range(n_sets):
                members = self._cirr_set(rng)
                if members is None:
                    continue
                ref, tgt1, tgt2 = members[0][0], members[1][0], members[3][0]
                order = list(range(6))  # order[slot] = member index shown in that slot
                rng.shuffle(order)
                names = {}
                for slot, j in enumerate(order):
                    name = f"{prefix}-{set_id}-{slot // 2}-img{slot % 2}"
                    names[j] = name
                    image_split[name] = f"./{prefix}/{name}.png"
                    self.write(members[j][0], f"cirr/{prefix}/{name}.png", f"cirr/{split}")
                member_names = [names[j] for j in order]
                queries = [(1, members[1][1], tgt1), (3, members[3][1], tgt2)]
                for j, mod, tgt in queries[: self.cfg.cirr_queries_per_set]:
                    text = tw.describe_modification(ref, mod, rng)
                    rec = {"pairid": pairid, "reference": names[0]}
                    img_set = {"id": set_id, "members": member_names,
                               "reference_rank": member_names.index(names[0])}
                    if split == "val":
                        rec["target_hard"] = names[j]
                        rec["target_soft"] = {names[j]: 1.0}
                        img_set["target_rank"] = member_names.index(names[j])
                    rec["caption"] = text
                    rec["img_set"] = img_set
                    captions.append(rec)
                    self.queries.append({"benchmark": "cirr", "split": split, "id": pairid,
                                         "reference": names[0], "target": names[j],
                                         "modification": mod.to_dict(), "text": text})
                    pairid += 1
            base = self.root / "cirr"
            atomic_write_json(base / "captions" / f"cap.rc2.{split}.json", captions, indent=4)
            atomic_write_json(base / "image_splits" / f"split.rc2.{split}.json", image_split, indent=4)
            counts[split] = {"queries": len(captions), "images": len(image_split)}
        return counts

    def _cirr_set(self, rng: random.Random):
        """Six distinct scenes as (scene, modification from its source): 0 a reference R, 1 and 3
        two targets of R, and 2, 4, 5 hard negatives one modification away from a target. Every
        member after R shares a shape or a colour with both targets."""
        plan = ((1, 0), (3, 0), (2, 1), (5, 1), (4, 3))  # (slot, source slot), in creation order
        for _ in range(50):
            ref = self.fresh(rng)
            slots = {0: (ref, None)}
            for slot, source in plan:
                targets = [slots[t][0] for t in (1, 3) if t in slots]
                s, mod = self.modified(rng, slots[source][0],
                                       accept=lambda c: all(_shares(c, t) for t in targets))
                if s is None:
                    break
                slots[slot] = (s, mod)
            if len(slots) == 6:
                return [slots[i] for i in range(6)]
            for s, _ in slots.values():  # give the scenes back and try another reference
                self.used.discard(s.key)
        return None

    def circo(self) -> dict:
        rng = self.rng("circo")
        cfg = self.cfg
        gallery: list[tw.Scene] = []
        queries = []  # (query scene, modification, text, target scene)
        for _ in range(cfg.circo_val_queries + cfg.circo_test_queries):
            ref = self.fresh(rng)
            tgt, mod = self.modified(rng, ref, kinds=CIRCO_KINDS)
            if tgt is None:
                continue
            gallery += [ref, tgt]
            # Other images that satisfy the description: the target's objects in other cells.
            for _ in range(rng.randint(0, 4)):
                cells = rng.sample(range(9), len(tgt.objects))
                variant = tw.make_scene(tgt.background, [tw.Obj(c, o.shape, o.color, o.size)
                                                          for c, o in zip(cells, tgt.objects)])
                if self.claim(variant):
                    gallery.append(variant)
            # Near misses: one more change of the target (hard negatives).
            for _ in range(2):
                near, _ = self.modified(rng, tgt, kinds=CIRCO_KINDS)
                if near is not None and near.content_key != tgt.content_key:
                    gallery.append(near)
            text = tw.describe_modification(ref, mod, rng, with_position=False)
            queries.append((ref, mod, text, tgt))
        gallery += [self.fresh(rng) for _ in range(cfg.circo_distractors)]
        rng.shuffle(gallery)
        ids = rng.sample(range(1, 600_000), len(gallery))
        id_of = {s.key: i for s, i in zip(gallery, ids)}
        by_content: dict[str, list[int]] = {}
        images = []
        for s, i in zip(gallery, ids):
            by_content.setdefault(s.content_key, []).append(i)
            name = f"{i:012d}.jpg"
            images.append({"file_name": name, "id": i, "width": cfg.image_size,
                           "height": cfg.image_size})
            self.write(s, f"circo/COCO2017_unlabeled/unlabeled2017/{name}", "circo")
        val, test = [], []
        for qid, (ref, mod, text, tgt) in enumerate(queries):
            split_val = qid < cfg.circo_val_queries
            split_id = qid if split_val else qid - cfg.circo_val_queries
            target_id = id_of[tgt.key]
            gt = [target_id] + sorted(i for i in by_content[tgt.content_key] if i != target_id)
            unchanged = [o for j, o in enumerate(ref.objects) if j != mod.index]
            concept = (f"a {unchanged[0].phrase(with_size=False)}" if unchanged
                       else f"a shape on a {ref.background} background")
            rec = {"reference_img_id": id_of[ref.key]}
            if split_val:
                rec["target_img_id"] = target_id
            rec["relative_caption"] = text
            rec["shared_concept"] = concept
            if split_val:
                rec["gt_img_ids"] = gt
            rec["id"] = split_id
            if split_val:
                rec["semantic_aspects"] = CIRCO_ASPECTS[mod.kind]
            (val if split_val else test).append(rec)
            self.queries.append({"benchmark": "circo", "split": "val" if split_val else "test",
                                 "id": split_id, "reference": id_of[ref.key], "target": target_id,
                                 "gt": gt, "modification": mod.to_dict(), "text": text})
        base = self.root / "circo"
        atomic_write_json(base / "annotations" / "val.json", val, indent=4)
        atomic_write_json(base / "annotations" / "test.json", test, indent=4)
        info = {"info": {"description": "MVFT-JI toy world, CIRCO-format gallery",
                         "version": str(GENERATOR_VERSION)},
                "licenses": [], "images": images}
        atomic_write_json(base / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
                          info)
        return {"val": {"queries": len(val)}, "test": {"queries": len(test)},
                "gallery": len(gallery)}

    def fashioniq(self) -> dict:
        counts = {}
        names_used: set[str] = set()
        for cat, shapes in FIQ_CATEGORIES.items():
            for split, n in (("val", self.cfg.fiq_val_queries), ("test", self.cfg.fiq_test_queries)):
                rng = self.rng(f"fashioniq/{cat}/{split}")
                gallery: list[tw.Scene] = []
                caps = []
                for _ in range(20 * n):
                    if len(caps) == n:
                        break
                    cand = self.fresh(rng, n_objects=1, shapes=shapes)
                    kinds = rng.sample(FIQ_KINDS, rng.choice((1, 2)))
                    tgt, mods, cur = cand, [], cand
                    for k in kinds:
                        nxt, mod = self.modified(rng, cur, kinds=(k,), shapes=shapes)
                        if nxt is None:
                            break
                        if cur is not cand:
                            self.used.discard(cur.key)  # intermediate scenes are not images
                        mods.append(mod)
                        cur = nxt
                    if len(mods) < len(kinds):  # a change had no free scene left: try another
                        self.used.discard(cand.key)
                        if cur is not cand:
                            self.used.discard(cur.key)
                        continue
                    tgt = cur
                    gallery += [cand, tgt]
                    caps.append((cand, tgt, mods, _fiq_captions(cand, tgt, mods, rng)))
                n_extra = max(0, int(round(self.cfg.fiq_gallery_factor * n)) - len(gallery))
                gallery += [self.fresh(rng, n_objects=1, shapes=shapes) for _ in range(n_extra)]
                rng.shuffle(gallery)
                name_of = {}
                for s in gallery:
                    name = _asin(rng, names_used)
                    name_of[s.key] = name
                    self.write(s, f"fashioniq/images/{name}.png", f"fashioniq/{cat}/{split}")
                records = []
                for qi, (cand, tgt, mods, captions) in enumerate(caps):
                    rec = {"target": name_of[tgt.key]} if split == "val" else {}
                    rec["candidate"] = name_of[cand.key]
                    rec["captions"] = captions
                    records.append(rec)
                    self.queries.append({"benchmark": f"fashioniq/{cat}", "split": split, "id": qi,
                                         "reference": name_of[cand.key], "target": name_of[tgt.key],
                                         "modifications": [m.to_dict() for m in mods],
                                         "text": captions})
                base = self.root / "fashioniq"
                atomic_write_json(base / "captions" / f"cap.{cat}.{split}.json", records, indent=4)
                atomic_write_json(base / "image_splits" / f"split.{cat}.{split}.json",
                                  [name_of[s.key] for s in gallery], indent=4)
                counts[f"{cat}/{split}"] = {"queries": len(records), "images": len(gallery)}
        return counts


def _shares(a: tw.Scene, b: tw.Scene) -> bool:
    """Whether two scenes share an object shape or an object colour."""
    return bool({o.shape for o in a.objects} & {o.shape for o in b.objects}
                or {o.color for o in a.objects} & {o.color for o in b.objects})


def _asin(rng: random.Random, used: set[str]) -> str:
    """A product id in the shape of an Amazon ASIN, as FashionIQ uses ('B00AKLK08G')."""
    while True:
        name = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        if name not in used:
            used.add(name)
            return name


_FIQ_PHRASES = {
    "color": ("is {v}", "is {v} in color", "has a {v} color", "{v} instead"),
    "size_large": ("is bigger", "is larger", "larger", "is a bigger one"),
    "size_small": ("is smaller", "is tinier", "smaller", "is a smaller one"),
    "background": ("has a {v} background", "is on a {v} background", "{v} background"),
    "shape": ("is a {v}", "is shaped like a {v}", "{v} shaped", "is a {v} instead"),
    "position": ("is {w}", "is placed {w}", "sits {w}"),
}


def _fiq_phrase(mod: tw.Modification, rng: random.Random) -> str:
    if mod.kind == "size":
        key = "size_large" if mod.value == "large" else "size_small"
        return rng.choice(_FIQ_PHRASES[key])
    if mod.kind == "position":
        return rng.choice(_FIQ_PHRASES["position"]).format(w=tw.where(mod.value))
    return rng.choice(_FIQ_PHRASES[mod.kind]).format(v=mod.value)


def _fiq_captions(cand, tgt, mods, rng: random.Random) -> list[str]:
    """Two relative captions, as two annotators would write them: together they name every
    change; each alone may name only part of it."""
    if len(mods) == 1:
        first = _fiq_phrase(mods[0], rng)
        second = next((p for p in (_fiq_phrase(mods[0], rng) for _ in range(8)) if p != first), first)
        return [first, second]
    a, b = mods
    first = [a, b] if rng.random() < 0.5 else [a]
    second = [b, a] if rng.random() < 0.5 else [b]
    return [" and ".join(_fiq_phrase(m, rng) for m in first),
            " and ".join(_fiq_phrase(m, rng) for m in second)]


class GroundTruth:
    """The scenes behind the world's images. Only the simulated MLLM and quality reports use it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        path = self.root / "ground_truth" / "scenes.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"no ground truth at {path}; is {root} a toy world root?")
        rows = read_jsonl(path)
        self._scenes = {r["path"]: tw.Scene.from_dict(r["scene"]) for r in rows}
        self._parts = {r["path"]: r["part"] for r in rows}
        self._queries = read_jsonl(self.root / "ground_truth" / "queries.jsonl")

    def _rel(self, image: str | Path) -> str:
        p = Path(image)
        if p.is_absolute():
            p = p.resolve().relative_to(self.root)
        return p.as_posix()

    def scene(self, image: str | Path) -> tw.Scene:
        """The scene of an image, given its path (absolute, or relative to the world root)."""
        rel = self._rel(image)
        try:
            return self._scenes[rel]
        except KeyError:
            raise KeyError(f"{image} is not an image of the toy world at {self.root}") from None

    def paths(self, part: str | None = None) -> list[str]:
        return [p for p, pt in self._parts.items() if part is None or pt == part]

    def queries(self, benchmark: str | None = None, split: str | None = None) -> list[dict]:
        return [q for q in self._queries
                if (benchmark is None or q["benchmark"].startswith(benchmark))
                and (split is None or q["split"] == split)]


def load_ground_truth(root: str | Path) -> GroundTruth:
    return GroundTruth(root)
