"""The toy world on disk: determinism, reuse, refusals, and the real benchmark formats."""
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, TINY
from mvft_helpers import toyworld as tw
from mvft_helpers.world import WorldConfig, generate_world, load_ground_truth, open_world


def tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def load(root, rel):
    return json.loads((Path(root) / rel).read_text())


# Fields whose keys are data (image names), not schema.
NAME_KEYED = {"target_soft"}


def signature(value):
    """Key names and value types of a JSON value, recursively (list items merged)."""
    if isinstance(value, dict):
        return {k: ({"<name>": signature(next(iter(v.values())))} if k in NAME_KEYED else signature(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [signature(value[0])] if value else []
    return type(value).__name__


def test_same_seed_and_config_give_identical_files(tiny_world, tmp_path):
    again = generate_world(tmp_path / "again", TINY, progress=False)
    assert tree_digest(again.root) == tree_digest(tiny_world.root)
    other = generate_world(tmp_path / "other", WorldConfig(**{**TINY.__dict__, "seed": 8}), progress=False)
    assert tree_digest(other.root) != tree_digest(tiny_world.root)


def test_complete_world_is_reused_not_regenerated(tiny_world):
    before = {p: p.stat().st_mtime_ns for p in tiny_world.root.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    info = generate_world(tiny_world.root, TINY, progress=False)
    assert time.perf_counter() - t0 < 1.0
    assert info.counts == tiny_world.counts
    assert {p: p.stat().st_mtime_ns for p in tiny_world.root.rglob("*") if p.is_file()} == before


def test_other_seed_or_config_is_refused_and_nothing_overwritten(tiny_world):
    before = tree_digest(tiny_world.root)
    with pytest.raises(ValueError, match="another configuration.*Nothing was overwritten"):
        generate_world(tiny_world.root, WorldConfig(**{**TINY.__dict__, "seed": 99}), progress=False)
    with pytest.raises(ValueError, match="n_pool"):
        generate_world(tiny_world.root, WorldConfig(**{**TINY.__dict__, "n_pool": 41}), progress=False)
    assert tree_digest(tiny_world.root) == before


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_world(tmp_path, TINY, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="n_pool"):
        WorldConfig(n_pool=-1)
    with pytest.raises(ValueError, match="unknown WorldConfig fields"):
        WorldConfig.from_dict({"n_images": 3})
    with pytest.raises(FileNotFoundError, match="generate"):
        open_world("/nonexistent/world")


def test_ground_truth_matches_the_pixels(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    paths = gt.paths()
    assert len(paths) == len(set(paths)) == sum(1 for p in tiny_world.root.rglob("*")
                                                 if p.suffix in (".png", ".jpg"))
    for rel in paths[:: max(1, len(paths) // 25)]:
        pixels = np.asarray(Image.open(tiny_world.root / rel).convert("RGB"), dtype=np.int16)
        expected = np.asarray(tw.render(gt.scene(rel), TINY.image_size), dtype=np.int16)
        tolerance = 12 if rel.endswith(".jpg") else 0   # JPEG (CIRCO, as COCO) is lossy
        assert np.abs(pixels - expected).mean() <= tolerance, rel
    with pytest.raises(KeyError, match="not an image of the toy world"):
        gt.scene("elsewhere.png")


def test_every_image_is_a_distinct_scene_and_pretraining_is_disjoint(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    keys = Counter(gt.scene(p).key for p in gt.paths())
    assert max(keys.values()) == 1
    pretrain = {gt.scene(p).key for p in gt.paths("pretrain")}
    others = {gt.scene(p).key for p in gt.paths() if not p.startswith("pretrain/")}
    assert pretrain and not pretrain & others
    caps = [json.loads(l) for l in (tiny_world.pretrain / "captions.jsonl").read_text().splitlines()]
    assert len(caps) == TINY.n_pretrain and all((tiny_world.pretrain / c["image"]).exists() for c in caps)


def test_unlabeled_pool_is_images_only(tiny_world):
    files = list((tiny_world.root / "unlabeled").rglob("*"))
    assert {p.suffix for p in files if p.is_file()} == {".png"}
    assert len([p for p in files if p.is_file()]) == TINY.n_pool


# ---------------------------------------------------------------- CIRR format
@pytest.mark.parametrize("split", ["val", "test1"])
def test_cirr_files_have_the_real_keys_and_types(tiny_world, split):
    toy = load(tiny_world.cirr, f"captions/cap.rc2.{split}.json")
    real = load(FIXTURES / "cirr", f"captions/cap.rc2.{split}.json")
    assert signature(toy[0]) == signature(real[0])
    toy_split = load(tiny_world.cirr, f"image_splits/split.rc2.{split}.json")
    real_split = load(FIXTURES / "cirr", f"image_splits/split.rc2.{split}.json")
    assert isinstance(toy_split, dict) and all(v.startswith("./") for v in toy_split.values())
    prefix = next(iter(real_split.values())).split("/")[1]
    assert all(v.split("/")[1] == prefix and v.endswith(".png") for v in toy_split.values())
    for name, rel in toy_split.items():
        assert (tiny_world.cirr / rel).exists(), rel


def test_cirr_img_sets_hold_reference_target_and_hard_negatives(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    split = load(tiny_world.cirr, "image_splits/split.rc2.val.json")
    scene = lambda name: gt.scene(Path("cirr") / split[name])
    negatives = same_object = 0
    for q in load(tiny_world.cirr, "captions/cap.rc2.val.json"):
        members = q["img_set"]["members"]
        assert len(members) == len(set(members)) == 6
        assert q["reference"] in members and q["target_hard"] in members
        assert members[q["img_set"]["reference_rank"]] == q["reference"]
        assert members[q["img_set"]["target_rank"]] == q["target_hard"]
        assert q["target_soft"] == {q["target_hard"]: 1.0}
        target = scene(q["target_hard"])
        for m in members:
            if m in (q["reference"], q["target_hard"]):
                continue
            neg = scene(m)
            # Every hard negative shares a shape or a colour with the target; most share a whole
            # object (same shape, colour and size).
            assert {o.shape for o in neg.objects} & {o.shape for o in target.objects} or \
                {o.color for o in neg.objects} & {o.color for o in target.objects}, m
            negatives += 1
            same_object += bool({(o.shape, o.color, o.size) for o in neg.objects}
                                & {(o.shape, o.color, o.size) for o in target.objects})
    assert same_object >= 0.5 * negatives, (same_object, negatives)
    for q in load(tiny_world.cirr, "captions/cap.rc2.test1.json"):
        assert "target_hard" not in q and "target_soft" not in q
        assert q["reference"] in q["img_set"]["members"]


def test_cirr_queries_apply_their_modification(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    split = load(tiny_world.cirr, "image_splits/split.rc2.val.json")
    for q in gt.queries("cirr", "val"):
        ref, tgt = (gt.scene(Path("cirr") / split[q[k]]) for k in ("reference", "target"))
        mod = tw.Modification.from_dict(q["modification"])
        assert tw.apply_modification(ref, mod) == tgt


# ---------------------------------------------------------------- CIRCO format
@pytest.mark.parametrize("split", ["val", "test"])
def test_circo_files_have_the_real_keys_and_types(tiny_world, split):
    toy = load(tiny_world.circo, f"annotations/{split}.json")
    real = load(FIXTURES / "circo", f"annotations/{split}.json")
    assert signature(toy[0]) == signature(real[0])
    assert [q["id"] for q in toy] == list(range(len(toy)))


def test_circo_ground_truths_are_exactly_the_images_that_satisfy_the_target(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    info = load(tiny_world.circo, "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json")
    gallery = {im["id"]: gt.scene(Path("circo/COCO2017_unlabeled/unlabeled2017") / im["file_name"])
               for im in info["images"]}
    assert all(isinstance(im["id"], int) and im["file_name"] == f"{im['id']:012d}.jpg"
               for im in info["images"])
    # "Satisfies the target description": same background and the same objects (shape, colour,
    # size), wherever they are placed.
    content = lambda s: (s.background, sorted((o.shape, o.color, o.size) for o in s.objects))
    multi = 0
    for q in load(tiny_world.circo, "annotations/val.json"):
        want = content(gallery[q["target_img_id"]])
        expected = {i for i, s in gallery.items() if content(s) == want}
        assert set(q["gt_img_ids"]) == expected and len(q["gt_img_ids"]) == len(expected)
        assert q["gt_img_ids"][0] == q["target_img_id"]
        assert q["reference_img_id"] in gallery and q["reference_img_id"] not in expected
        multi += len(expected) > 1
    assert multi > 0, "several ground truths per query should occur"


# ---------------------------------------------------------------- FashionIQ format
@pytest.mark.parametrize("split", ["val", "test"])
def test_fashioniq_files_have_the_real_keys_and_types(tiny_world, split):
    for cat in ("dress", "shirt", "toptee"):
        toy = load(tiny_world.fashioniq, f"captions/cap.{cat}.{split}.json")
        real = load(FIXTURES / "fashioniq", f"captions/cap.dress.{split}.json")
        assert signature(toy[0]) == signature(real[0])
        assert all(len(q["captions"]) == 2 for q in toy)
        names = load(tiny_world.fashioniq, f"image_splits/split.{cat}.{split}.json")
        assert signature(names) == signature(load(FIXTURES / "fashioniq", "image_splits/split.dress.val.json"))
        assert all((tiny_world.fashioniq / "images" / f"{n}.png").exists() for n in names)
        for q in toy:
            assert q["candidate"] in names and q.get("target", q["candidate"]) in names


def test_fashioniq_captions_name_every_change(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    for q in gt.queries("fashioniq", "val"):
        joined = " and ".join(q["text"])
        for m in q["modifications"]:
            value = m["value"]
            if m["kind"] in ("color", "background", "shape"):
                assert value in joined, (joined, m)
            elif m["kind"] == "position":
                assert tw.POSITIONS[value] in joined, (joined, m)
