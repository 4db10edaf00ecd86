"""The official metrics of FashionIQ, CIRR and CIRCO, vectorised over queries.

All functions take ranked lists as an integer array `ranked[q, r]` = gallery index at rank r (best
first), and return percentages.

- FashionIQ: Recall@{10,50} per category (the reference is not removed); the benchmark score is the
  plain mean over the three categories.
- CIRR: Recall@{1,5,10,50} against `target_hard` after removing the reference image from the
  ranking; Recall_subset@{1,2,3} ranking only the 5 non-reference members of `img_set`.
- CIRCO: AP@K = sum over ranks r <= K of precision@r at ground-truth hits, / min(K, #ground truths);
  mAP@{5,10,25,50} is the mean over queries.
"""
from __future__ import annotations

import numpy as np

FIQ_KS = (10, 50)
CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
CIRCO_KS = (5, 10, 25, 50)


def _check_ranked(ranked: np.ndarray) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked lists must be a (queries, ranks) array, got shape {ranked.shape}")
    srt = np.sort(ranked, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        q = int(np.nonzero(dup.any(axis=1))[0][0])
        raise ValueError(f"query {q} lists gallery item {int(srt[q][1:][dup[q]][0])} twice; "
                         "each ranked list must hold distinct items")
    return ranked


def target_positions(ranked: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of each query's target in its list (the list length if absent). With `exclude`
    (one gallery index per query, e.g. the reference), that item is removed from the list first."""
    ranked = _check_ranked(ranked)
    keep = np.ones(ranked.shape, dtype=bool)
    if exclude is not None:
        keep = ranked != np.asarray(exclude).reshape(-1, 1)
    hit = (ranked == np.asarray(targets).reshape(-1, 1)) & keep
    kept_before = np.cumsum(keep, axis=1) - keep      # kept items strictly before each rank
    first_hit = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), kept_before[np.arange(len(ranked)), first_hit], keep.sum(axis=1))


def recall_at(positions: np.ndarray, ks, list_length: int | None = None, prefix: str = "R",
              complete: bool = False) -> dict:
    """Recall@K in percent. Lists shorter than K are an error unless they rank the whole gallery."""
    positions = np.asarray(positions)
    out = {}
    for k in ks:
        if list_length is not None and k > list_length and not complete:
            raise ValueError(f"{prefix}@{k} needs ranked lists of at least {k} items, got {list_length}")
        out[f"{prefix}@{k}"] = 100.0 * float(np.mean(positions < k)) if len(positions) else 0.0
    return out


def fashioniq_recall(ranked: np.ndarray, targets: np.ndarray, ks=FIQ_KS,
                     n_gallery: int | None = None) -> dict:
    """`n_gallery`: the gallery size, so that lists ranking all of a small gallery are accepted."""
    ranked = _check_ranked(ranked)
    return recall_at(target_positions(ranked, targets), ks, ranked.shape[1],
                     complete=ranked.shape[1] == n_gallery)


def cirr_recall(ranked: np.ndarray, targets: np.ndarray, references: np.ndarray, ks=CIRR_KS,
                n_gallery: int | None = None) -> dict:
    """Recall@K with the reference removed; `ranked` should hold at least max(ks) + 1 items."""
    ranked = _check_ranked(ranked)
    pos = target_positions(ranked, targets, exclude=references)
    has_ref = (ranked == np.asarray(references).reshape(-1, 1)).any(axis=1)
    usable = ranked.shape[1] - int(has_ref.max(initial=0))
    return recall_at(pos, ks, usable, complete=ranked.shape[1] == n_gallery)


def cirr_recall_subset(ranked_subset: np.ndarray, targets: np.ndarray, ks=CIRR_SUBSET_KS) -> dict:
    """Recall_subset@K: `ranked_subset` ranks only the 5 non-reference members of each img_set."""
    ranked_subset = _check_ranked(ranked_subset)
    return recall_at(target_positions(ranked_subset, targets), ks, ranked_subset.shape[1], prefix="Rs")


def circo_map(ranked: np.ndarray, ground_truths: list[list[int]], ks=CIRCO_KS,
              n_gallery: int | None = None) -> dict:
    """mAP@K over queries with several ground truths each (CIRCO's normalisation)."""
    ranked = _check_ranked(ranked)
    q, n = ranked.shape
    width = max((len(g) for g in ground_truths), default=1) or 1
    gt = np.full((q, width), -2, dtype=np.int64)
    for i, g in enumerate(ground_truths):
        gt[i, : len(g)] = g
    n_gt = np.array([len(g) for g in ground_truths], dtype=np.float64)
    if (n_gt == 0).any():
        raise ValueError("every CIRCO query needs at least one ground truth (test splits have none)")
    hits = (ranked[:, :, None] == gt[:, None, :]).any(axis=2)          # (q, n)
    precision = np.cumsum(hits, axis=1) / np.arange(1, n + 1)
    out = {}
    for k in ks:
        if k > n and n != n_gallery:
            raise ValueError(f"mAP@{k} needs ranked lists of at least {k} items, got {n}")
        ap = (precision[:, :k] * hits[:, :k]).sum(axis=1) / np.minimum(k, n_gt)
        out[f"mAP@{k}"] = 100.0 * float(ap.mean())
    return out


def mean_over_categories(per_category: dict[str, dict]) -> dict:
    """FashionIQ's benchmark score: the plain mean of the category recalls."""
    names = next(iter(per_category.values())).keys()
    return {m: float(np.mean([v[m] for v in per_category.values()])) for m in names}
