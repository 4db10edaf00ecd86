"""Benchmark loaders: FashionIQ, CIRR (rc2) and CIRCO, and their toy-world twins, with one interface.

Every loader turns a benchmark root into `Split`s: a list of `Query`s and a gallery of image names,
plus where each image is on disk. The toy benchmarks are written in the real formats, so they use
the very same loaders (`toy-cirr` is `cirr` on <world>/cirr, and so on).

    python -m mvft_helpers.data check --benchmark cirr --root /data/cirr

validates a layout and prints the query and gallery counts of every split.

Expected layouts (one root per benchmark):

    FashionIQ  <root>/captions/cap.{dress,shirt,toptee}.{val,test}.json
               <root>/image_splits/split.{dress,shirt,toptee}.{val,test}.json
               <root>/images/<name>.png  (or .jpg)
    CIRR       <root>/captions/cap.rc2.{val,test1}.json
               <root>/image_splits/split.rc2.{val,test1}.json
               images where the split files point: <root>/dev/*.png, <root>/test1/*.png,
               or the same under <root>/img_raw/
    CIRCO      <root>/annotations/{val,test}.json
               <root>/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
               <root>/COCO2017_unlabeled/unlabeled2017/<file_name>
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import check_choice

BENCHMARKS = ("fashioniq", "cirr", "circo", "toy-fashioniq", "toy-cirr", "toy-circo")
SPLITS = {"fashioniq": ("val", "test"), "cirr": ("val", "test1"), "circo": ("val", "test")}
FIQ_CATEGORIES = ("dress", "shirt", "toptee")

LAYOUTS = {
    "fashioniq": "<root>/captions/cap.{dress,shirt,toptee}.{val,test}.json, "
                 "<root>/image_splits/split.{dress,shirt,toptee}.{val,test}.json, "
                 "<root>/images/<name>.png or .jpg",
    "cirr": "<root>/captions/cap.rc2.{val,test1}.json, <root>/image_splits/split.rc2.{val,test1}.json, "
            "images at the paths the split files give (./dev/..., ./test1/...) under <root> or "
            "<root>/img_raw",
    "circo": "<root>/annotations/{val,test}.json, "
             "<root>/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json, "
             "<root>/COCO2017_unlabeled/unlabeled2017/<file_name>",
}


class LayoutError(FileNotFoundError):
    """A benchmark folder lacks a file; the message names it and the expected layout."""


def _need(path: Path, base: str) -> Path:
    if not path.exists():
        raise LayoutError(f"missing {path}\nexpected {base} layout: {LAYOUTS[base]}")
    return path


def _read(path: Path, base: str):
    with open(_need(path, base), encoding="utf-8") as f:
        return json.load(f)


@dataclass
class Query:
    qid: str                      # pairid (CIRR), id (CIRCO), "<category>/<index>" (FashionIQ)
    reference: str                # gallery name of the reference image
    texts: list[str]              # the modification text; FashionIQ: both caption orders
    targets: list[str] = field(default_factory=list)   # ground truths, first = main target
    subset: list[str] | None = None                    # CIRR: the 5 non-reference img_set members
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.texts[0]


@dataclass
class Split:
    benchmark: str                # e.g. "cirr", "fashioniq/dress", "toy-circo"
    split: str
    queries: list[Query]
    gallery: list[str]            # image names in a fixed order
    paths: dict[str, Path]        # name -> image file
    remove_reference: bool        # CIRR protocol: drop the reference from the ranking

    @property
    def has_targets(self) -> bool:
        return bool(self.queries) and bool(self.queries[0].targets)

    def image_path(self, name: str) -> Path:
        return self.paths[name]

    def __repr__(self) -> str:
        return (f"Split({self.benchmark} {self.split}: {len(self.queries)} queries, "
                f"{len(self.gallery)} gallery images)")


def fashioniq_text(captions: list[str], reverse: bool = False) -> str:
    """FashionIQ's standard join: '<c0> and <c1>', trailing '.?, ' stripped."""
    c = [s.strip().strip(".?, ") for s in captions]
    if reverse:
        c = c[::-1]
    return f"{c[0]} and {c[1]}"


def _base(benchmark: str) -> str:
    return benchmark[4:] if benchmark.startswith("toy-") else benchmark


def resolve_root(benchmark: str, root: str | Path) -> Path:
    """The benchmark folder; for toy benchmarks the world root is accepted as well."""
    check_choice("benchmark", benchmark, BENCHMARKS)
    root = Path(root)
    if benchmark.startswith("toy-") and (root / "toyworld.json").exists():
        return root / _base(benchmark)
    return root


def load_fashioniq(root: Path, split: str, benchmark: str = "fashioniq") -> list[Split]:
    out = []
    for cat in FIQ_CATEGORIES:
        caps = _read(root / "captions" / f"cap.{cat}.{split}.json", "fashioniq")
        names = _read(root / "image_splits" / f"split.{cat}.{split}.json", "fashioniq")
        img_dir = _need(root / "images", "fashioniq")
        ext = next((e for e in (".png", ".jpg") if names and (img_dir / f"{names[0]}{e}").exists()),
                   ".png")
        paths = {n: img_dir / f"{n}{ext}" for n in names}
        queries = [Query(qid=f"{cat}/{i}", reference=q["candidate"],
                         texts=[fashioniq_text(q["captions"]), fashioniq_text(q["captions"], True)],
                         targets=[q["target"]] if "target" in q else [],
                         extra={"captions": q["captions"], "category": cat})
                   for i, q in enumerate(caps)]
        out.append(Split(f"{benchmark}/{cat}", split, queries, list(names), paths,
                         remove_reference=False))
    return out


def load_cirr(root: Path, split: str, benchmark: str = "cirr") -> list[Split]:
    caps = _read(root / "captions" / f"cap.rc2.{split}.json", "cirr")
    names = _read(root / "image_splits" / f"split.rc2.{split}.json", "cirr")
    first = next(iter(names.values()), "")
    img_root = next((r for r in (root, root / "img_raw") if (r / first).exists()), root)
    paths = {n: (img_root / rel).resolve() for n, rel in names.items()}
    queries = []
    for q in caps:
        members = q["img_set"]["members"]
        queries.append(Query(
            qid=str(q["pairid"]), reference=q["reference"], texts=[q["caption"]],
            targets=[q["target_hard"]] if "target_hard" in q else [],
            subset=[m for m in members if m != q["reference"]],
            extra={"target_soft": q.get("target_soft"), "img_set_id": q["img_set"]["id"]}))
    return [Split(benchmark, split, queries, list(names), paths, remove_reference=True)]


def load_circo(root: Path, split: str, benchmark: str = "circo") -> list[Split]:
    anns = _read(root / "annotations" / f"{split}.json", "circo")
    info = _read(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", "circo")
    img_dir = root / "COCO2017_unlabeled" / "unlabeled2017"
    gallery = [str(im["id"]) for im in info["images"]]
    paths = {str(im["id"]): img_dir / im["file_name"] for im in info["images"]}
    queries = [Query(qid=str(q["id"]), reference=str(q["reference_img_id"]),
                     texts=[q["relative_caption"]],
                     targets=[str(i) for i in q.get("gt_img_ids", [])],
                     extra={"shared_concept": q.get("shared_concept"),
                            "semantic_aspects": q.get("semantic_aspects", [])})
               for q in anns]
    return [Split(benchmark, split, queries, gallery, paths, remove_reference=False)]


_LOADERS = {"fashioniq": load_fashioniq, "cirr": load_cirr, "circo": load_circo}


def load_benchmark(benchmark: str, root: str | Path, split: str = "val") -> list[Split]:
    """All `Split`s of one benchmark split (FashionIQ: one per category)."""
    base = _base(check_choice("benchmark", benchmark, BENCHMARKS))
    check_choice(f"split of {benchmark}", split, SPLITS[base])
    return _LOADERS[base](resolve_root(benchmark, root), split, benchmark)


def check_layout(benchmark: str, root: str | Path, check_images: bool = True) -> dict:
    """Load every split of a benchmark and verify its images exist; return the counts.

    Raises LayoutError naming the first missing file (and how many are missing) and the layout.
    """
    base = _base(check_choice("benchmark", benchmark, BENCHMARKS))
    counts = {}
    for split in SPLITS[base]:
        for s in load_benchmark(benchmark, root, split):
            if check_images:
                needed = set(s.gallery) | {q.reference for q in s.queries}
                unknown = sorted(n for n in needed if n not in s.paths)
                if unknown:
                    raise LayoutError(f"{s.benchmark} {split}: {len(unknown)} query images are not in "
                                      f"the gallery list, e.g. {unknown[:3]}")
                missing = [s.paths[n] for n in sorted(needed) if not s.paths[n].exists()]
                if missing:
                    raise LayoutError(f"missing {missing[0]} ({len(missing)} of {len(needed)} images of "
                                      f"{s.benchmark} {split} are missing)\nexpected {base} layout: "
                                      f"{LAYOUTS[base]}")
            counts[f"{s.benchmark} {split}"] = {"queries": len(s.queries), "gallery": len(s.gallery)}
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.data",
                                 description="Benchmark layout tools.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a benchmark folder and print its counts")
    c.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    c.add_argument("--root", required=True, help="the benchmark folder (toy: the world root also works)")
    c.add_argument("--skip-images", action="store_true", help="check annotation files only")
    a = ap.parse_args(argv)
    try:
        counts = check_layout(a.benchmark, a.root, check_images=not a.skip_images)
    except (LayoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    width = max(len(k) for k in counts)
    for k, v in counts.items():
        print(f"{k:<{width}}  {v['queries']:>6} queries  {v['gallery']:>7} gallery images")
    print("layout OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
