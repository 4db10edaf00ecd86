"""Quality checks against ground truth, GT-free rules, and the inspector clicked without a browser."""
import json

import pytest

from mvft_helpers import toyworld as tw
from mvft_helpers.inspector import Inspector
from mvft_helpers.mllm import REALISTIC, SimulatedErrors, SimulatedMLLM
from mvft_helpers.quality import (auto_curation_rules, evaluate_prompt, modification_kind, store_quality,
                                  text_report)
from mvft_helpers.synthesis import SyntheticStore, list_images, synthesize
from mvft_helpers.world import load_ground_truth


@pytest.fixture(scope="module")
def store(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "store.jsonl"
    synthesize(list_images(tiny_world.pool), SimulatedMLLM(tiny_world.root, REALISTIC.scaled(3)), out,
               progress=False)
    return out


def test_modification_kind_is_read_from_words():
    import random
    rng = random.Random(0)
    hits = total = 0
    for _ in range(500):
        s = tw.random_scene(rng)
        m = tw.sample_modification(s, rng)
        hits += modification_kind(tw.describe_modification(s, m, rng)) == m.kind
        total += 1
    assert hits / total > 0.95


def test_quality_is_perfect_for_an_error_free_mllm_and_drops_with_errors(tiny_world, tmp_path):
    gt = load_ground_truth(tiny_world.root)
    images = list_images(tiny_world.pool)
    clean = tmp_path / "clean.jsonl"
    synthesize(images, SimulatedMLLM(tiny_world.root), clean, progress=False)
    q = store_quality(SyntheticStore(clean).records(), gt.scene)
    assert q["caption_exact"] == q["target_exact"] == q["mod_understood"] == 100.0
    noisy = tmp_path / "noisy.jsonl"
    synthesize(images, SimulatedMLLM(tiny_world.root, SimulatedErrors(invent_object=0.6)), noisy, progress=False)
    qn = store_quality(SyntheticStore(noisy).records(), gt.scene)
    assert qn["target_invented"] > 20 and qn["target_exact"] < 80


def test_evaluate_prompt_measures_variants(tiny_world):
    gt = load_ground_truth(tiny_world.root)
    sim = SimulatedMLLM(tiny_world.root, REALISTIC)
    images = list_images(tiny_world.pool)
    v1 = evaluate_prompt(sim, "caption/v1", images, gt.scene)
    v2 = evaluate_prompt(sim, "caption/v2", images, gt.scene)
    assert v2["exact"] > v1["exact"] and set(v1) == {"exact", "invented", "lost", "underspecified", "contract_failures"}


def test_text_report_and_auto_rules(store):
    recs = SyntheticStore(store).records()
    rep = text_report(recs)
    assert rep["accepted"] == len(rep["target_words"]) and sum(rep["kinds"].values()) == rep["accepted"]
    rec = dict(recs[0], status="accepted", caption="A red circle.", target="A red circle.")
    assert auto_curation_rules(rec) == "target repeats the caption"
    rec = dict(recs[0], status="accepted", modification="make the red circle blue",
               caption="A large red circle in the center.", target="A large green circle in the center.")
    assert auto_curation_rules(rec) == "target never mentions 'blue'"


def test_inspector_buttons_write_the_curation_file(tiny_world, store):
    raw = store.read_bytes()
    ui = Inspector(store, world_root=tiny_world.root)
    first = ui.current["id"]
    assert "detected errors" in ui.flags.value and ui.image.value[:4] == b"\x89PNG"
    ui.reject_button.click()
    second = ui.current["id"]
    assert second != first
    ui.target.value = "A small white star in the center on a black background."
    ui.edit_button.click()
    ui.prev_button.click()
    assert ui.current["id"] == first
    ui.accept_button.click()
    lines = [json.loads(l) for l in ui.store.curation_path.read_text().splitlines()]
    assert [(l["id"], l["action"]) for l in lines] == [(first, "reject"), (second, "edit"), (first, "accept")]
    assert lines[1]["edits"] == {"target": "A small white star in the center on a black background."}
    assert store.read_bytes() == raw
    ui.status.value = "rejected"
    assert all(r["status"] == "rejected" for r in ui.visible)
    kind = ui.kinds[0]
    ui.status.value = "(all)"
    ui.kind.value = kind
    assert ui.visible and all(modification_kind(r["modification"]) == kind for r in ui.visible)
