"""Scenes, rendering, captions and modifications of the toy world."""
import random

import numpy as np
import pytest

from mvft_helpers import toyworld as tw


def scenes(n=300, seed=0):
    rng = random.Random(seed)
    return [tw.random_scene(rng) for _ in range(n)]


def test_vocabulary_sizes_meet_the_spec():
    assert len(tw.SHAPES) >= 5 and len(tw.COLORS) >= 7 and len(tw.SIZES) == 2
    assert len(tw.POSITIONS) == 9 and len(tw.BACKGROUNDS) >= 3
    assert set(tw.MOD_KINDS) == {"color", "shape", "size", "position", "background", "add", "remove"}


@pytest.mark.parametrize("kind", tw.MOD_KINDS)
def test_every_kind_yields_a_valid_different_scene(kind):
    rng = random.Random(kind)
    applied = 0
    for scene in scenes():
        if kind not in tw.valid_kinds(scene):
            continue
        mod = tw.sample_modification(scene, rng, kinds=(kind,))
        target = tw.apply_modification(scene, mod)
        tw.validate_scene(target)
        assert target.key != scene.key
        text = tw.describe_modification(scene, mod, rng)
        assert isinstance(text, str) and len(text.split()) >= 2
        applied += 1
    assert applied > 50


@pytest.mark.parametrize("kind", tw.MOD_KINDS)
def test_every_kind_has_several_phrasings(kind):
    rng = random.Random(1)
    texts = set()
    for scene in scenes(400, seed=3):
        if kind in tw.valid_kinds(scene):
            mod = tw.sample_modification(scene, rng, kinds=(kind,))
            texts.add(tw.describe_modification(scene, mod, rng).split(" the ")[0].split(" a ")[0])
    assert len(texts) >= 3, texts


def test_modification_semantics():
    s = tw.make_scene("gray", [tw.Obj(0, "circle", "red", "large"), tw.Obj(4, "square", "blue", "small")])
    assert tw.apply_modification(s, tw.Modification("color", 0, "green")).objects[0].color == "green"
    assert tw.apply_modification(s, tw.Modification("position", 0, 8)).objects[-1] == \
        tw.Obj(8, "circle", "red", "large")
    assert len(tw.apply_modification(s, tw.Modification("remove", 1)).objects) == 1
    added = tw.apply_modification(s, tw.Modification("add", None, tw.Obj(2, "star", "pink", "small")))
    assert len(added.objects) == 3
    assert tw.apply_modification(s, tw.Modification("background", None, "black")).background == "black"
    assert "remove" not in tw.valid_kinds(tw.make_scene("gray", [tw.Obj(0, "circle", "red", "large")]))


def test_referring_expressions_are_unambiguous():
    s = tw.make_scene("gray", [tw.Obj(0, "circle", "red", "large"), tw.Obj(1, "circle", "red", "small"),
                               tw.Obj(2, "square", "red", "small")])
    assert tw.refer(s, 0) == "the large red circle"
    assert tw.refer(s, 2) == "the red square"
    assert tw.refer(s, 2, random.Random(0)) in ("the square", "the red square", "the small red square")
    twins = tw.make_scene("gray", [tw.Obj(0, "circle", "red", "large"), tw.Obj(8, "circle", "red", "large")])
    assert tw.refer(twins, 0) != tw.refer(twins, 1)


def test_invalid_scenes_are_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="allowed"):
        tw.make_scene("plaid", [tw.Obj(0, "circle", "red", "large")])
    with pytest.raises(ValueError, match="share a grid cell"):
        tw.make_scene("gray", [tw.Obj(0, "circle", "red", "large"), tw.Obj(0, "star", "red", "large")])
    with pytest.raises(ValueError, match="allowed"):
        tw.sample_modification(scenes(1)[0], random.Random(0), kinds=("rotate",))


def test_render_is_deterministic_and_shows_the_scene():
    s = tw.make_scene("black", [tw.Obj(4, "square", "white", "large")])
    a, b = np.asarray(tw.render(s, 64)), np.asarray(tw.render(s, 64))
    assert a.shape == (64, 64, 3) and (a == b).all()
    assert a[32, 32].tolist() == list(tw.COLORS["white"])   # the square covers the centre
    assert a[2, 2].tolist() == list(tw.BACKGROUNDS["black"])  # the corner is background
    moved = tw.apply_modification(s, tw.Modification("position", 0, 0))
    assert not (np.asarray(tw.render(moved, 64)) == a).all()


def test_caption_mentions_every_object_and_the_background():
    s = tw.make_scene("beige", [tw.Obj(0, "star", "pink", "small"), tw.Obj(8, "cross", "green", "large")])
    for rng in (None, random.Random(3)):
        text = tw.caption(s, rng)
        for word in ("small pink star", "large green cross", "beige", "top left", "bottom right"):
            assert word in text
