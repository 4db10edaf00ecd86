"""Loaders on the real annotation files (placeholder images) and on the toy world."""
import json
import os
import shutil
from pathlib import Path

import pytest

from mvft_helpers import data

SHARED = Path(os.environ.get("MVFT_SHARED_BENCHMARKS",
                             Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
needs_shared = pytest.mark.skipif(not SHARED.exists(),
                                  reason=f"real annotation files not found at {SHARED}")
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c"
                    "4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082")


def placeholders(paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(PNG)


@pytest.fixture(scope="module")
def real_fashioniq(tmp_path_factory):
    root = tmp_path_factory.mktemp("fiq")
    shutil.copytree(SHARED / "fashioniq", root, dirs_exist_ok=True)
    names = set()
    for f in (root / "image_splits").glob("*.json"):
        names |= set(json.loads(f.read_text()))
    for f in (root / "captions").glob("*.json"):
        for q in json.loads(f.read_text()):
            names |= {q["candidate"], q.get("target", q["candidate"])}
    placeholders(root / "images" / f"{n}.jpg" for n in names)   # .jpg, as some codebases have them
    return root


@pytest.fixture(scope="module")
def real_cirr(tmp_path_factory):
    root = tmp_path_factory.mktemp("cirr")
    for d in ("captions", "image_splits"):
        shutil.copytree(SHARED / "cirr" / d, root / d)
    for split in ("val", "test1"):
        rels = json.loads((root / "image_splits" / f"split.rc2.{split}.json").read_text()).values()
        placeholders(root / "img_raw" / r for r in rels)        # the img_raw/ layout
    return root


@pytest.fixture(scope="module")
def real_circo(tmp_path_factory):
    root = tmp_path_factory.mktemp("circo")
    shutil.copytree(SHARED / "circo" / "annotations", root / "annotations")
    ids = set()
    for split in ("val", "test"):
        for q in json.loads((root / "annotations" / f"{split}.json").read_text()):
            ids |= {q["reference_img_id"], *q.get("gt_img_ids", [])}
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in sorted(ids)]
    info = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"images": images}))
    placeholders(root / "COCO2017_unlabeled" / "unlabeled2017" / im["file_name"] for im in images)
    return root


@needs_shared
def test_fashioniq_counts_equal_the_real_ones(real_fashioniq):
    counts = data.check_layout("fashioniq", real_fashioniq)
    assert {k: v["queries"] for k, v in counts.items() if k.endswith(" val")} == {
        "fashioniq/dress val": 2017, "fashioniq/shirt val": 2038, "fashioniq/toptee val": 1961}
    assert {k: v["gallery"] for k, v in counts.items() if k.endswith(" val")} == {
        "fashioniq/dress val": 3817, "fashioniq/shirt val": 6346, "fashioniq/toptee val": 5373}
    dress = data.load_benchmark("fashioniq", real_fashioniq, "val")[0]
    q = dress.queries[0]
    assert q.texts == ["is shiny and silver with shorter sleeves and fit and flare",
                       "fit and flare and is shiny and silver with shorter sleeves"]
    assert dress.image_path(q.reference).suffix == ".jpg"


@needs_shared
def test_cirr_counts_equal_the_real_ones(real_cirr):
    counts = data.check_layout("cirr", real_cirr)
    assert counts == {"cirr val": {"queries": 4181, "gallery": 2297},
                      "cirr test1": {"queries": 4148, "gallery": 2315}}
    val = data.load_benchmark("cirr", real_cirr, "val")[0]
    assert all(len(q.subset) == 5 and q.reference not in q.subset for q in val.queries)
    assert val.image_path(val.queries[0].reference).exists()


@needs_shared
def test_circo_counts_equal_the_real_ones(real_circo):
    counts = data.check_layout("circo", real_circo)
    assert counts["circo val"]["queries"] == 220 and counts["circo test"]["queries"] == 800
    val = data.load_benchmark("circo", real_circo, "val")[0]
    assert sum(len(q.targets) for q in val.queries) == 916


@needs_shared
def test_check_cli_names_the_missing_file_and_the_layout(real_cirr, tmp_path, capsys):
    broken = tmp_path / "cirr"
    shutil.copytree(real_cirr / "captions", broken / "captions")
    assert data.main(["check", "--benchmark", "cirr", "--root", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "split.rc2.val.json" in err and "expected cirr layout" in err
    assert data.main(["check", "--benchmark", "cirr", "--root", str(real_cirr)]) == 0
    assert "4181 queries" in capsys.readouterr().out


def test_missing_images_are_counted_and_named(tiny_world, tmp_path):
    copy = tmp_path / "cirr"
    shutil.copytree(tiny_world.cirr, copy)
    victim = sorted((copy / "dev").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(data.LayoutError, match=rf"missing .*{victim.name} \(1 of"):
        data.check_layout("toy-cirr", copy)


@pytest.mark.parametrize("bench", ["toy-cirr", "toy-circo", "toy-fashioniq"])
def test_toy_benchmarks_load_through_the_real_loaders(tiny_world, bench):
    counts = data.check_layout(bench, tiny_world.root)      # the world root is accepted
    assert all(v["queries"] > 0 and v["gallery"] > 0 for v in counts.values())
    for split in data.load_benchmark(bench, tiny_world.root, "val"):
        assert split.has_targets
        assert all(t in split.paths for q in split.queries for t in q.targets)


def test_unknown_benchmark_or_split_lists_the_allowed_values(tiny_world):
    with pytest.raises(ValueError, match="allowed values.*'cirr'"):
        data.load_benchmark("cirr2", tiny_world.root)
    with pytest.raises(ValueError, match="'val', 'test1'"):
        data.load_benchmark("toy-cirr", tiny_world.root, "test")
