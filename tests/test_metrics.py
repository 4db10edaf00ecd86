"""The official metrics against slow, obviously-correct reference implementations."""
import numpy as np
import pytest

from mvft_helpers import metrics as M


def slow_recall(ranked, targets, k, references=None):
    hits = 0
    for i, row in enumerate(ranked):
        row = [x for x in row if references is None or x != references[i]]
        hits += targets[i] in row[:k]
    return 100.0 * hits / len(ranked)


def slow_ap(row, gts, k):
    hits, total = 0, 0.0
    for r, item in enumerate(row[:k], start=1):
        if item in gts:
            hits += 1
            total += hits / r
    return total / min(k, len(gts))


@pytest.fixture
def random_rankings():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(200)[:60] for _ in range(300)])
    targets = np.where(rng.random(300) < 0.7, ranked[np.arange(300), rng.integers(0, 60, 300)],
                       rng.integers(0, 200, 300))
    refs = np.where(rng.random(300) < 0.8, ranked[np.arange(300), rng.integers(0, 20, 300)], 999)
    refs = np.where(refs == targets, 999, refs)
    return ranked, targets, refs


def test_fashioniq_recall_matches_reference(random_rankings):
    ranked, targets, _ = random_rankings
    out = M.fashioniq_recall(ranked, targets)
    assert out == pytest.approx({f"R@{k}": slow_recall(ranked, targets, k) for k in (10, 50)})


def test_cirr_recall_removes_the_reference(random_rankings):
    ranked, targets, refs = random_rankings
    out = M.cirr_recall(ranked, targets, refs)
    assert out == pytest.approx({f"R@{k}": slow_recall(ranked, targets, k, refs) for k in (1, 5, 10, 50)})
    # removing the reference matters: without removal recall@1 is lower here
    assert slow_recall(ranked, targets, 1) < out["R@1"]


def test_cirr_recall_hand_example():
    ranked = np.array([[7, 3, 5], [3, 7, 5]])
    # query 0: reference 7 ranked first, target 3 becomes rank 1 after removal
    assert M.cirr_recall(ranked, [3, 5], [7, 7], ks=(1, 2)) == {"R@1": 50.0, "R@2": 100.0}
    assert M.cirr_recall_subset(np.array([[3, 5, 1], [1, 3, 5]]), [3, 5]) == pytest.approx(
        {"Rs@1": 50.0, "Rs@2": 50.0, "Rs@3": 100.0})


def test_circo_map_matches_reference_and_normalises_by_min_k_gt():
    rng = np.random.default_rng(1)
    ranked = np.stack([rng.permutation(120)[:50] for _ in range(100)])
    gts = [list(rng.choice(120, size=rng.integers(1, 15), replace=False)) for _ in range(100)]
    out = M.circo_map(ranked, gts)
    for k in (5, 10, 25, 50):
        assert out[f"mAP@{k}"] == pytest.approx(100 * np.mean([slow_ap(r, g, k) for r, g in zip(ranked, gts)]))
    # 10 ground truths, all in the top 5: AP@5 is 1.0 (normalised by min(5, 10)), not 0.5
    assert M.circo_map(np.arange(50)[None], [list(range(10))], ks=(5,)) == {"mAP@5": 100.0}


def test_duplicates_and_short_lists_are_errors():
    with pytest.raises(ValueError, match="lists gallery item 4 twice"):
        M.fashioniq_recall(np.array([[1, 4, 4]]), [1], ks=(1,))
    with pytest.raises(ValueError, match="at least 10 items, got 3"):
        M.fashioniq_recall(np.array([[1, 2, 3]]), [1])
    with pytest.raises(ValueError, match="at least one ground truth"):
        M.circo_map(np.arange(50)[None], [[]])


def test_category_mean_is_the_plain_mean():
    out = M.mean_over_categories({"a": {"R@10": 10.0}, "b": {"R@10": 20.0}, "c": {"R@10": 60.0}})
    assert out == {"R@10": 30.0}
