"""From a VLM and a benchmark split to rankings and metrics.

Methods (the names metrics.json uses):
- `zero-shot-image`: the reference image's tokens against the gallery (ignores the text);
- `zero-shot-text`: the modification text against the gallery (ignores the image);
- `composed`: the composed query (reference image + text through the Q-Former's multimodal path);
- `text`: the MLLM's target text t' against the gallery (joint inference, text branch);
- `fused`: w * composed + (1 - w) * text (joint inference).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data import Split
from .evaluate import benchmark_metrics, gallery_index, subset_indices, split_metrics
from .retrieval import CacheKey, FeatureCache, all_scores

QUERY_METHODS = ("zero-shot-image", "zero-shot-text", "composed")
NORMALISATIONS = ("raw", "zscore")


@torch.no_grad()
def vision_features(backend, paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike | None,
                    name: str, batch_size: int = 128, progress: bool = True) -> torch.Tensor:
    """Frozen image-encoder features of `paths` (N, patches, D) as float16, computed once and
    cached on disk."""
    paths = [str(p) for p in paths]

    def compute(images):
        out = []
        it = range(0, len(images), batch_size)
        if progress:
            it = tqdm(it, desc=f"image encoder: {name}", unit="batch")
        for i in it:
            ims = [Image.open(p).convert("RGB") for p in images[i:i + batch_size]]
            out.append(backend.vision_features(backend.preprocess(ims)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)

    if cache_dir is None:
        return torch.from_numpy(compute(paths)).half()
    key = CacheKey(model=f"{backend.name}/vision", checkpoint="frozen", images=paths)
    # One file per image list, so that stores or splits with different images do not evict each other.
    digest = key.manifest()["images_sha256"][:10]
    feats, _ = FeatureCache(cache_dir).get_or_compute(f"vision-{name}-{digest}", key, compute,
                                                      dtype=np.float16)
    # float16 halves the memory of large pools (10K ViT-L outputs: 5 GB instead of 10 GB)
    return torch.from_numpy(np.array(feats, dtype=np.float16))


@torch.no_grad()
def batched(fn, n: int, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(n, i + batch_size))) for i in range(0, n, batch_size)])


@torch.no_grad()
def image_tokens(backend, vision: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return batched(lambda s: backend.image_tokens(vision[s]).cpu(), len(vision), batch_size)


@torch.no_grad()
def text_features(backend, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    return batched(lambda s: backend.text_features(texts[s]).cpu(), len(texts), batch_size)


@torch.no_grad()
def composed_tokens(backend, vision: torch.Tensor, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    return batched(lambda s: backend.composed_tokens(vision[s], texts[s]).cpu(), len(texts), batch_size)


class SplitFeatures:
    """The features of one split under one model: gallery image tokens and the reference images'
    frozen features (so queries can be encoded with any text).

    Two modes. `keep_vision=True` (toy galleries, training): the frozen encoder's output of the
    whole gallery is cached and kept, so `refresh()` re-encodes the gallery cheaply after every
    epoch. `keep_vision=False` (large real galleries such as CIRCO's 123K images, whose ViT
    outputs would not fit): the gallery's Q-Former tokens are computed image batch by image batch
    and cached on disk keyed by model, `checkpoint` and image list; only the references' frozen
    features are kept.
    """

    def __init__(self, backend, split: Split, cache_dir: str | os.PathLike | None, progress: bool = True,
                 keep_vision: bool = True, checkpoint: str = "none", batch_size: int = 128):
        self.backend, self.split = backend, split
        self.keep_vision = keep_vision
        tag = split.benchmark.replace("/", "-") + "-" + split.split
        idx = gallery_index(split)
        self.reference_rows = torch.tensor([idx[q.reference] for q in split.queries])
        paths = [split.paths[n] for n in split.gallery]
        if keep_vision:
            self.gallery_vision = vision_features(backend, paths, cache_dir, tag, progress=progress)
            self.reference_vision = self.gallery_vision[self.reference_rows]
            self.refresh()
            return
        refs = sorted(set(self.reference_rows.tolist()))
        ref_vision = vision_features(backend, [paths[i] for i in refs], cache_dir, f"{tag}-references",
                                     progress=progress)
        pos = {g: i for i, g in enumerate(refs)}
        self.reference_vision = ref_vision[torch.tensor([pos[r] for r in self.reference_rows.tolist()])]

        def compute(images):
            out = []
            it = range(0, len(images), batch_size)
            if progress:
                it = tqdm(it, desc=f"gallery tokens: {tag}", unit="batch")
            with torch.no_grad():
                for i in it:
                    ims = [Image.open(p).convert("RGB") for p in images[i:i + batch_size]]
                    v = backend.vision_features(backend.preprocess(ims))
                    out.append(backend.image_tokens(v).float().cpu().numpy())
            return np.concatenate(out)

        key = CacheKey(model=backend.name, checkpoint=checkpoint, images=[str(p) for p in paths])
        if cache_dir is None:
            self.gallery = torch.from_numpy(compute([str(p) for p in paths]))
        else:
            feats, _ = FeatureCache(cache_dir).get_or_compute(f"tokens-{tag}", key, compute, dtype=np.float16)
            self.gallery = torch.from_numpy(np.asarray(feats, dtype=np.float32))

    def refresh(self) -> None:
        """Recompute what depends on trainable weights (after a training step or a new checkpoint)."""
        if not self.keep_vision:
            raise RuntimeError("refresh() needs keep_vision=True; build a new SplitFeatures with the "
                               "new checkpoint instead")
        self.gallery = image_tokens(self.backend, self.gallery_vision)

    def query_features(self, method: str, texts: Sequence[str] | None = None) -> torch.Tensor:
        """Query-side features of every query; `texts` overrides the queries' own texts."""
        texts = list(texts) if texts is not None else [q.text for q in self.split.queries]
        if method == "zero-shot-image":
            return image_tokens(self.backend, self.reference_vision)
        if method in ("zero-shot-text", "text"):
            return text_features(self.backend, texts)
        if method == "composed":
            return composed_tokens(self.backend, self.reference_vision, texts)
        raise ValueError(f"unknown method {method!r}; allowed: {list(QUERY_METHODS) + ['text']}")


def composed_over_variants(features: SplitFeatures) -> torch.Tensor:
    """The composed query averaged over every phrasing a query carries (then renormalised):
    FashionIQ's two caption orders; a single phrasing elsewhere, where this is the plain query."""
    n_variants = len(features.split.queries[0].texts) if features.split.queries else 1
    total = sum(features.query_features("composed", [q.texts[v] for q in features.split.queries])
                for v in range(n_variants))
    return torch.nn.functional.normalize(total, dim=-1)


def normalise_scores(scores: torch.Tensor, how: str = "raw") -> torch.Tensor:
    if how == "raw":
        return scores
    if how == "zscore":   # per query: the two branches have different scales
        return (scores - scores.mean(dim=1, keepdim=True)) / scores.std(dim=1, keepdim=True).clamp(min=1e-6)
    raise ValueError(f"unknown normalisation {how!r}; allowed: {list(NORMALISATIONS)}")


def fuse(composed: torch.Tensor, text: torch.Tensor, w: float = 0.5, normalisation: str = "raw") -> torch.Tensor:
    """s(y) = w * sim(query(x, m), y) + (1 - w) * sim(t', y)."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"the fusion weight w must be in [0, 1], got {w}")
    return w * normalise_scores(composed, normalisation) + (1 - w) * normalise_scores(text, normalisation)


def rank_from_scores(scores: torch.Tensor, k: int = 100) -> np.ndarray:
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()


def subset_ranking(split: Split, scores: torch.Tensor) -> np.ndarray | None:
    """CIRR: the 5 non-reference img_set members ordered by score (for Recall_subset)."""
    if not split.remove_reference:
        return None
    members = subset_indices(split)
    sub = np.take_along_axis(scores.numpy(), members, 1)
    return np.take_along_axis(members, np.argsort(-sub, axis=1, kind="stable"), 1)


def metrics_from_scores(split: Split, scores: torch.Tensor, k: int = 100) -> dict:
    return split_metrics(split, rank_from_scores(scores, k), subset_ranking(split, scores))


def method_scores(features: SplitFeatures, method: str, similarity: str = "meanmax",
                  texts: Sequence[str] | None = None) -> torch.Tensor:
    if method == "composed" and texts is None:
        q = composed_over_variants(features)
    else:
        q = features.query_features(method, texts)
    return all_scores(q, features.gallery, similarity)


def evaluate_methods(features_list: list[SplitFeatures], methods: Sequence[str] = QUERY_METHODS,
                     similarity: str = "meanmax") -> dict[str, dict[str, dict]]:
    """{method: {benchmark: metrics}} over the splits of one benchmark (FashionIQ: 3 categories)."""
    out = {}
    for method in methods:
        splits = [f.split for f in features_list]
        scores = [method_scores(f, method, similarity) for f in features_list]
        ranked = [rank_from_scores(s) for s in scores]
        subsets = [subset_ranking(sp, s) for sp, s in zip(splits, scores)]
        out[method] = benchmark_metrics(splits, ranked, subsets)
    return out


def _pixels(path, size: int = 64) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0


def reference_at_top(split: Split, scores: torch.Tensor, near_copy: float | None = 0.02) -> dict:
    """The modality-gap failure, in percent of queries: the top-1 is the reference itself, or
    (with `near_copy`) a wrong image whose pixels differ from the reference's by less than that
    mean absolute difference (0.02: only a small object changed)."""
    idx = gallery_index(split)
    refs = torch.tensor([idx[q.reference] for q in split.queries])
    top1 = scores.argmax(dim=1)
    out = {"top1_is_reference": 100.0 * float((top1 == refs).float().mean())}
    if near_copy is not None:
        close = [i != r and split.gallery[i] not in q.targets
                 and float(np.abs(_pixels(split.image_path(split.gallery[i]))
                                  - _pixels(split.image_path(split.gallery[r]))).mean()) < near_copy
                 for q, i, r in zip(split.queries, top1.tolist(), refs.tolist())]
        out["top1_near_copy"] = 100.0 * float(np.mean(close))
    return out
