"""Score rankings with the official protocols, read and write test-server files.

    python -m mvft_helpers.evaluate --benchmark cirr --split val --root DIR \
        --predictions val_pred_ranks_recall.json [val_pred_ranks_recall_subset.json]

Prediction formats (the test servers' own, and one documented for FashionIQ):
- CIRR: {"version": "rc2", "metric": "recall", "<pairid>": [50 image names], ...} and optionally
  {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 image names], ...}.
- CIRCO: {"<query id>": [50 image ids], ...} for every query.
- FashionIQ: {"version": "fashioniq-v1", "dress": {"<query index>": [50 image names]}, "shirt":
  {...}, "toptee": {...}}; the query index is the position in cap.<category>.<split>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import metrics as M
from .data import BENCHMARKS, FIQ_CATEGORIES, LayoutError, Split, load_benchmark
from .io import atomic_write_json, read_json

SUBMISSION_DEPTH = 50
SUBSET_DEPTH = 3


class PredictionError(ValueError):
    """A prediction file does not fit the split: the message says which query and why."""


def _base(benchmark: str) -> str:
    return benchmark[4:] if benchmark.startswith("toy-") else benchmark


def gallery_index(split: Split) -> dict[str, int]:
    return {name: i for i, name in enumerate(split.gallery)}


def subset_indices(split: Split) -> np.ndarray:
    """CIRR: the gallery indices of each query's 5 non-reference img_set members, (Q, 5)."""
    idx = gallery_index(split)
    return np.array([[idx[m] for m in q.subset] for q in split.queries], dtype=np.int64)


def split_metrics(split: Split, ranked: np.ndarray, ranked_subset: np.ndarray | None = None) -> dict:
    """Metrics of one split from ranked gallery indices (Q, K), best first."""
    if not split.has_targets:
        raise ValueError(f"{split.benchmark} {split.split} has no ground truth (a test split): "
                         "write a submission file instead")
    if len(ranked) != len(split.queries):
        raise ValueError(f"{len(ranked)} ranked lists for {len(split.queries)} queries")
    idx = gallery_index(split)
    n = len(split.gallery)
    base = _base(split.benchmark.split("/")[0])
    if base == "cirr":
        out = M.cirr_recall(ranked, np.array([idx[q.targets[0]] for q in split.queries]),
                            np.array([idx[q.reference] for q in split.queries]), n_gallery=n)
        if ranked_subset is not None:
            out.update(M.cirr_recall_subset(ranked_subset,
                                            np.array([idx[q.targets[0]] for q in split.queries])))
        return out
    if base == "circo":
        return M.circo_map(ranked, [[idx[t] for t in q.targets] for q in split.queries], n_gallery=n)
    return M.fashioniq_recall(ranked, np.array([idx[q.targets[0]] for q in split.queries]), n_gallery=n)


def benchmark_metrics(splits: list[Split], ranked: list[np.ndarray],
                      ranked_subsets: list | None = None) -> dict[str, dict]:
    """{benchmark or benchmark/category: metrics}; FashionIQ adds the category mean."""
    ranked_subsets = ranked_subsets or [None] * len(splits)
    out = {s.benchmark: split_metrics(s, r, rs) for s, r, rs in zip(splits, ranked, ranked_subsets)}
    if len(splits) > 1:
        out[splits[0].benchmark.split("/")[0]] = M.mean_over_categories(out)
    return out


# ----------------------------------------------------------------------------- writers

def _needed(split: Split, depth: int, exclude_reference: bool) -> int:
    """How many names a list must hold: `depth`, or all of a gallery smaller than that."""
    return min(depth, len(split.gallery) - int(exclude_reference))


def _names(split: Split, ranked: np.ndarray, depth: int, exclude_reference: bool) -> list[list[str]]:
    depth = _needed(split, depth, exclude_reference)
    out = []
    for q, row in zip(split.queries, ranked):
        names = [split.gallery[i] for i in row if not (exclude_reference and split.gallery[i] == q.reference)]
        if len(names) < depth:
            raise ValueError(f"query {q.qid}: only {len(names)} ranked items, the server wants {depth}")
        out.append(names[:depth])
    return out


def write_cirr_submission(split: Split, ranked: np.ndarray, ranked_subset: np.ndarray,
                          out_dir: str | Path) -> tuple[Path, Path]:
    """The two CIRR test-server files: 50 names per pairid (reference removed) and 3 subset names."""
    out_dir = Path(out_dir)
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q, names in zip(split.queries, _names(split, ranked, SUBMISSION_DEPTH, True)):
        recall[q.qid] = names
    for q, row in zip(split.queries, ranked_subset):
        subset[q.qid] = [split.gallery[i] for i in row[:SUBSET_DEPTH]]
    a = atomic_write_json(out_dir / f"{split.split}_pred_ranks_recall.json", recall)
    b = atomic_write_json(out_dir / f"{split.split}_pred_ranks_recall_subset.json", subset)
    return a, b


def write_circo_submission(split: Split, ranked: np.ndarray, path: str | Path) -> Path:
    """CIRCO's file: {"<query id>": [50 image ids]} for every query."""
    sub = {q.qid: [int(n) for n in names]
           for q, names in zip(split.queries, _names(split, ranked, SUBMISSION_DEPTH, False))}
    return atomic_write_json(path, sub)


def write_fashioniq_predictions(splits: list[Split], ranked: list[np.ndarray], path: str | Path) -> Path:
    sub: dict = {"version": "fashioniq-v1"}
    for s, r in zip(splits, ranked):
        cat = s.benchmark.split("/")[-1]
        sub[cat] = {q.qid.split("/")[-1]: names
                    for q, names in zip(s.queries, _names(s, r, SUBMISSION_DEPTH, False))}
    return atomic_write_json(path, sub)


# ----------------------------------------------------------------------------- readers

def _ranked_from_lists(split: Split, lists: dict, depth: int, what: str) -> np.ndarray:
    depth = _needed(split, depth, split.remove_reference and depth == SUBMISSION_DEPTH)
    idx = gallery_index(split)
    missing = [q.qid for q in split.queries if q.qid not in lists]
    if missing:
        raise PredictionError(f"{what}: {len(missing)} queries have no prediction, e.g. {missing[:3]}")
    extra = sorted(set(lists) - {q.qid for q in split.queries})
    if extra:
        raise PredictionError(f"{what}: unknown query ids {extra[:3]} (not in {split.benchmark} {split.split})")
    rows = []
    for q in split.queries:
        names = [str(n) for n in lists[q.qid]]
        unknown = [n for n in names if n not in idx]
        if unknown:
            raise PredictionError(f"{what}: query {q.qid} lists unknown image ids {unknown[:3]}")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise PredictionError(f"{what}: query {q.qid} lists {dup} more than once")
        if len(names) < depth:
            raise PredictionError(f"{what}: query {q.qid} has {len(names)} items, {depth} are needed")
        rows.append([idx[n] for n in names[:depth]])
    return np.array(rows, dtype=np.int64)


def evaluate_files(benchmark: str, split: str, root: str | Path, files: list[str | Path]) -> dict:
    splits = load_benchmark(benchmark, root, split)
    base = _base(benchmark)
    preds = [read_json(f) for f in files]
    if base == "cirr":
        s = splits[0]
        by_metric = {p.get("metric"): p for p in preds}
        if "recall" not in by_metric:
            raise PredictionError('CIRR needs the file with "metric": "recall"')
        for p in preds:
            if p.get("version") != "rc2" or p.get("metric") not in ("recall", "recall_subset"):
                raise PredictionError('CIRR files need "version": "rc2" and "metric": "recall" or '
                                      '"recall_subset"')
        strip = lambda p: {k: v for k, v in p.items() if k not in ("version", "metric")}
        # The reference may be listed (it is removed as the protocol says), so 50 names allow R@50
        # only when the reference is absent; require what R@50 needs after removal.
        ranked = _ranked_from_lists(s, strip(by_metric["recall"]), SUBMISSION_DEPTH, "recall file")
        sub = None
        if "recall_subset" in by_metric:
            sub = _ranked_from_lists(s, strip(by_metric["recall_subset"]), SUBSET_DEPTH, "recall_subset file")
            members = subset_indices(s)
            bad = [q.qid for q, row, m in zip(s.queries, sub, members) if not set(row) <= set(m)]
            if bad:
                raise PredictionError(f"recall_subset file: query {bad[0]} lists images outside its img_set")
        return benchmark_metrics(splits, [ranked], [sub])
    if base == "circo":
        s = splits[0]
        return benchmark_metrics(splits, [_ranked_from_lists(s, {str(k): v for k, v in preds[0].items()},
                                                             SUBMISSION_DEPTH, "CIRCO file")])
    p = preds[0]
    if p.get("version") != "fashioniq-v1":
        raise PredictionError('FashionIQ predictions need "version": "fashioniq-v1" (see --help)')
    ranked = []
    for s in splits:
        cat = s.benchmark.split("/")[-1]
        if cat not in p:
            raise PredictionError(f"FashionIQ predictions lack the category {cat!r}; need {FIQ_CATEGORIES}")
        lists = {f"{cat}/{k}": v for k, v in p[cat].items()}
        ranked.append(_ranked_from_lists(s, lists, SUBMISSION_DEPTH, f"category {cat}"))
    return benchmark_metrics(splits, ranked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    ap.add_argument("--split", default="val")
    ap.add_argument("--root", required=True)
    ap.add_argument("--predictions", required=True, nargs="+")
    a = ap.parse_args(argv)
    try:
        out = evaluate_files(a.benchmark, a.split, a.root, a.predictions)
    except (PredictionError, LayoutError, ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: {m: round(v, 2) for m, v in d.items()} for k, d in out.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
