"""The retrieval engine: cached gallery features and chunked multi-token scoring with top-K.

Features are multi-token on both sides: a query is (Tq, D) (Tq = 1 for a text feature), a gallery
item is (Tg, D) (e.g. 32 Q-Former query tokens). Tokens are L2-normalised. Two similarities:

- `meanmax` (token-level, the default): for each query token the best gallery token, averaged;
- `max`: the best pair of tokens (BLIP-2's image-text similarity).

`topk` scores a chunk of queries against a chunk of the gallery with one matrix multiply
(Qc*Tq x Gc*Tg), reduces it, and merges it into a running top-K, so memory is bounded by the chunk
sizes whatever the gallery size. For very large galleries `faiss_topk` first retrieves candidates
by the mean token with FAISS, then re-scores them exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .io import atomic_write_bytes, atomic_write_json, read_json

SIMILARITIES = ("meanmax", "max")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def _as_tokens(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 2:          # (N, D): one token each
        x = x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"features must be (N, D) or (N, tokens, D), got shape {tuple(x.shape)}")
    return x


def pairwise_scores(q: torch.Tensor, g: torch.Tensor, similarity: str = "meanmax") -> torch.Tensor:
    """(Qc, Tq, D) x (Gc, Tg, D) -> (Qc, Gc) scores, through one matrix multiply."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; allowed: {list(SIMILARITIES)}")
    qc, tq, d = q.shape
    gc, tg, _ = g.shape
    s = (q.reshape(qc * tq, d) @ g.reshape(gc * tg, d).T).view(qc, tq, gc, tg)
    s = s.amax(dim=3)                                   # best gallery token per query token
    return s.mean(dim=1) if similarity == "meanmax" else s.amax(dim=1)


@torch.no_grad()
def all_scores(queries, gallery, similarity: str = "meanmax", block_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Every (query, item) score, (Q, G), computed in blocks of at most `block_bytes` of token
    similarities, so that only the output grows with the gallery (fusion needs whole rows)."""
    q_all, g_all = _as_tokens(queries).float(), _as_tokens(gallery).float()
    tq, tg = q_all.shape[1], g_all.shape[1]
    g_chunk = max(1, min(len(g_all), block_bytes // (4 * tq * tg * 64)))
    q_chunk = max(1, block_bytes // (4 * tq * tg * g_chunk))
    out = torch.empty(len(q_all), len(g_all))
    for q0 in range(0, len(q_all), q_chunk):
        for g0 in range(0, len(g_all), g_chunk):
            out[q0:q0 + q_chunk, g0:g0 + g_chunk] = pairwise_scores(
                q_all[q0:q0 + q_chunk], g_all[g0:g0 + g_chunk], similarity)
    return out


@torch.no_grad()
def topk(queries, gallery, k: int = 100, similarity: str = "meanmax", query_chunk: int = 128,
         gallery_chunk: int = 2048, normalized: bool = False,
         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` gallery indices (best first) and their scores for every query.

    Memory: one (query_chunk*Tq) x (gallery_chunk*Tg) score block at a time plus the running top-k.
    """
    q_all, g_all = _as_tokens(queries), _as_tokens(gallery)
    if not normalized:
        q_all, g_all = normalize(q_all), normalize(g_all)
    n_q, n_g = q_all.shape[0], g_all.shape[0]
    k = min(k, n_g)
    out_idx = np.empty((n_q, k), dtype=np.int64)
    out_val = np.empty((n_q, k), dtype=np.float32)
    chunks = range(0, n_q, query_chunk)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=f"scoring {n_q} queries x {n_g} items", unit="chunk")
    for q0 in chunks:
        q = q_all[q0:q0 + query_chunk].float()
        best_val = torch.full((q.shape[0], 0), float("-inf"))
        best_idx = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for g0 in range(0, n_g, gallery_chunk):
            s = pairwise_scores(q, g_all[g0:g0 + gallery_chunk].float(), similarity)
            kk = min(k, s.shape[1])
            v, i = s.topk(kk, dim=1)
            vals = torch.cat([best_val, v], dim=1)
            idxs = torch.cat([best_idx, i + g0], dim=1)
            top = vals.topk(min(k, vals.shape[1]), dim=1)
            best_val, best_idx = top.values, idxs.gather(1, top.indices)
        out_idx[q0:q0 + len(q)] = best_idx.numpy()
        out_val[q0:q0 + len(q)] = best_val.numpy()
    return out_idx, out_val


@torch.no_grad()
def score_candidates(queries, gallery, candidates: np.ndarray, similarity: str = "meanmax",
                     normalized: bool = False) -> np.ndarray:
    """Exact scores of each query against its own candidate list (Q, C) -> (Q, C)."""
    q_all, g_all = _as_tokens(queries), _as_tokens(gallery)
    if not normalized:
        q_all, g_all = normalize(q_all), normalize(g_all)
    cand = torch.as_tensor(candidates)
    out = np.empty(cand.shape, dtype=np.float32)
    for i in range(len(cand)):
        out[i] = pairwise_scores(q_all[i:i + 1].float(), g_all[cand[i]].float(), similarity)[0].numpy()
    return out


def rerank(candidates: np.ndarray, scores: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(scores, order, 1)


@torch.no_grad()
def faiss_topk(queries, gallery, k: int = 50, n_candidates: int = 1000,
               similarity: str = "meanmax") -> tuple[np.ndarray, np.ndarray]:
    """Approximate first stage (FAISS inner product on mean-pooled tokens), exact re-scoring of
    the `n_candidates` best with the token-level similarity. Needs `pip install faiss-cpu`."""
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("faiss_topk needs FAISS: pip install faiss-cpu (or the project's "
                          "[faiss] extra)") from e
    q_all, g_all = normalize(_as_tokens(queries)), normalize(_as_tokens(gallery))
    pooled_g = normalize(g_all.mean(dim=1)).numpy().astype(np.float32)
    pooled_q = normalize(q_all.mean(dim=1)).numpy().astype(np.float32)
    index = faiss.IndexFlatIP(pooled_g.shape[1])
    index.add(pooled_g)
    _, cand = index.search(pooled_q, min(n_candidates, len(pooled_g)))
    exact = score_candidates(q_all, g_all, cand, similarity, normalized=True)
    return rerank(cand, exact, k)


def recall_kept(exact_idx: np.ndarray, approx_idx: np.ndarray, k: int = 50) -> float:
    """Share (percent) of the exact top-k that the approximate top-k keeps."""
    kept = [len(set(a[:k]) & set(e[:k])) / min(k, len(e)) for a, e in zip(approx_idx, exact_idx)]
    return 100.0 * float(np.mean(kept))


# ----------------------------------------------------------------------------- feature cache

@dataclass
class CacheKey:
    model: str                 # backend and model name
    checkpoint: str            # checkpoint path or hub revision
    images: Sequence[str]      # image names in gallery order

    def manifest(self) -> dict:
        ck = Path(self.checkpoint)
        ck_state = None
        if ck.exists():
            st = ck.stat()
            ck_state = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        digest = hashlib.sha256("\n".join(self.images).encode()).hexdigest()
        return {"model": self.model, "checkpoint": str(self.checkpoint), "checkpoint_state": ck_state,
                "n_images": len(self.images), "images_sha256": digest}


class FeatureCache:
    """Gallery features on disk (`<name>.npy` + `<name>.json` manifest).

    The manifest keys the features by model, checkpoint (path and file state) and the ordered image
    list; when any of them changes the cache is stale and is rebuilt.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.npy", self.dir / f"{name}.json"

    def load(self, name: str, key: CacheKey) -> np.ndarray | None:
        feats, manifest = self._paths(name)
        if not (feats.exists() and manifest.exists()):
            return None
        if read_json(manifest) != key.manifest():
            return None
        return np.load(feats, mmap_mode="r")

    def get_or_compute(self, name: str, key: CacheKey, compute: Callable[[Sequence[str]], np.ndarray],
                       dtype=np.float32) -> tuple[np.ndarray, bool]:
        """(features, True if they came from the cache). `dtype` is the on-disk type (float16
        halves the size of large frozen-encoder outputs)."""
        cached = self.load(name, key)
        if cached is not None:
            return cached, True
        feats = np.ascontiguousarray(np.asarray(compute(key.images), dtype=dtype))
        if len(feats) != len(key.images):
            raise ValueError(f"computed {len(feats)} features for {len(key.images)} images")
        feats_path, manifest_path = self._paths(name)
        import io
        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(feats_path, buf.getvalue())
        atomic_write_json(manifest_path, key.manifest(), indent=2)   # written last: marks complete
        return feats, False

    def info(self, name: str) -> dict | None:
        _, manifest = self._paths(name)
        return json.loads(manifest.read_text()) if manifest.exists() else None
