"""Joint inference: the MLLM's target text t' for every benchmark query, stored and resumable.

For a query (reference image x, modification m; FashionIQ: its two relative captions joined) the
MLLM gets the reference image and `query_target` prompt and writes t', the description of the
image the user wants. Records live in a JSONL store keyed by benchmark, split, query, prompt
version and model, so reruns reuse them and a killed run continues.

The fused score of gallery image y is  s(y) = w * sim(query(x, m), y) + (1 - w) * sim(t', y)
(see `inference.fuse`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from typing import Sequence

from tqdm.auto import tqdm

from .data import Split, fashioniq_text
from .mllm import ChatRequest, MLLMBackend
from .prompts import DEFAULTS, get_prompt
from .synthesis import JsonlStore, ask


def query_text(split: Split, q) -> str:
    """What the MLLM is told the user wants: the modification, or FashionIQ's joined captions."""
    if "captions" in q.extra:
        return fashioniq_text(q.extra["captions"])
    return q.text


def model_key(backend: MLLMBackend) -> str:
    """A short, stable name for a backend and its settings (errors knobs included)."""
    desc = json.dumps(backend.describe(), sort_keys=True)
    return f"{backend.describe().get('model', backend.name)}#{hashlib.sha1(desc.encode()).hexdigest()[:8]}"


def record_id(split: Split, qid: str, prompt_id: str, model: str) -> str:
    return f"{split.benchmark}|{split.split}|{qid}|{prompt_id}|{model}"


def target_texts(backend: MLLMBackend, splits: Sequence[Split], store_path: str | os.PathLike,
                 prompt_id: str = DEFAULTS["query_target"], chunk_size: int = 64,
                 progress: bool = True) -> list[list[str]]:
    """t' for every query of every split (one list per split, in query order).

    Answers that break the contract after one repair are stored as rejected; for those queries t'
    falls back to the modification text itself (and the record says so)."""
    prompt = get_prompt(prompt_id)
    store = JsonlStore(store_path)
    store.recover()
    model = model_key(backend)
    have = {r["id"]: r for r in store.records()}
    todo = [(s, q) for s in splits for q in s.queries
            if record_id(s, q.qid, prompt.id, model) not in have]
    bar = tqdm(total=len(todo), desc=f"target texts t' ({backend.name})", unit="query", disable=not progress)
    for c in range(0, len(todo), chunk_size):
        chunk = todo[c:c + chunk_size]
        requests = [ChatRequest(key=record_id(s, q.qid, prompt.id, model),
                                prompt=prompt.render(modification=query_text(s, q)),
                                image=str(s.image_path(q.reference)), system=prompt.system)
                    for s, q in chunk]
        results = ask(backend, prompt, requests)
        recs = []
        for (s, q), req, (parsed, raw, reason) in zip(chunk, requests, results):
            if reason and reason.startswith("backend:"):
                continue   # not stored: retried on the next run
            recs.append({"id": req.key, "benchmark": s.benchmark, "split": s.split, "query": q.qid,
                         "prompt_version": prompt.id, "model": model,
                         "target": parsed["target"] if parsed else None,
                         "status": "accepted" if parsed else "rejected", "reason": reason,
                         "time": _dt.datetime.now().isoformat(timespec="seconds")})
        store.append(recs)
        have.update({r["id"]: r for r in recs})
        bar.update(len(chunk))
    bar.close()
    out = []
    for s in splits:
        texts = []
        for q in s.queries:
            r = have.get(record_id(s, q.qid, prompt.id, model))
            if r is None:
                raise RuntimeError(f"no target text for {s.benchmark} {s.split} query {q.qid}: the "
                                   "backend failed for it; run again to retry")
            texts.append(r["target"] if r["status"] == "accepted" else query_text(s, q))
        out.append(texts)
    return out
