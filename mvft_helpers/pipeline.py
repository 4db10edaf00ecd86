"""The stages the notebooks chain, each reading and writing files under `work_dir`:

    work_dir/models/toy-blip2-pretrained-*.pt   stage-1 stand-in (notebook 03, cached)
    work_dir/models/<name>.pt                   fine-tuned checkpoints (03 and 06)
    work_dir/features/                          cached frozen image features
    work_dir/synthetic/store.jsonl              synthetic triplets (01) + curation (02)
    work_dir/joint/target_texts.jsonl           MLLM target texts t' for benchmark queries (04)
    work_dir/fusion.json                        the chosen fusion weight (04)
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from .config import REAL_BENCHMARKS, TOY_BENCHMARKS, check_choice
from .data import load_benchmark
from .inference import SplitFeatures, evaluate_methods, metrics_from_scores, method_scores, vision_features
from .io import atomic_write_json, read_json
from .synthesis import load_training_triplets
from .training import (PRETRAIN, ContrastiveObjective, TrainConfig, TrainData, is_complete, load_trained,
                       pretrain_toy_blip2, train)

BENCHMARK_SPLITS = {"cirr": "val", "circo": "val", "fashioniq": "val"}


class Work:
    """Paths of one run's working folder."""

    def __init__(self, work_dir: str | os.PathLike):
        self.root = Path(work_dir)

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def store(self) -> Path:
        return self.root / "synthetic" / "store.jsonl"

    @property
    def target_texts(self) -> Path:
        return self.root / "joint" / "target_texts.jsonl"

    @property
    def fusion(self) -> Path:
        return self.root / "fusion.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / f"{name}.pt"


VLM_BACKENDS = ("blip2", "lavis")


def make_vlm(backend: str = "blip2", vlm_model: str = "Salesforce/blip2-itm-vit-g", device: str | None = None):
    """A pretrained VLM of the paper profile.

    `blip2`: a transformers BLIP-2 retrieval model (`vlm_model`: hub id or local folder).
    `lavis`: LAVIS's BLIP-2 (`vlm_model`: `pretrain_vitL`, the paper's ViT-L/14, or see
    `lavis_backend.parse_model`); needs the LAVIS environment (`make lavis-env`).
    """
    check_choice("VLM backend", backend, VLM_BACKENDS)
    if backend == "lavis":
        from .lavis_backend import load_lavis_blip2

        return load_lavis_blip2(vlm_model, device=device)
    from .models import load_blip2

    return load_blip2(vlm_model, device=device)


def default_device() -> str | None:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def load_vlm(profile: str, work_dir, checkpoint_name: str = "vlm",
             vlm_model: str = "Salesforce/blip2-itm-vit-g", device: str | None = None, backend: str = "blip2"):
    """The fine-tuned VLM of a run: the toy model from its checkpoint, or (paper) the pretrained
    `backend` model with the run's fine-tuned checkpoint on top when there is one."""
    ckpt = Work(work_dir).model(checkpoint_name)
    if profile == "toy":
        return load_trained(ckpt)[0]
    backend = make_vlm(backend, vlm_model, device)
    if ckpt.exists():
        backend = load_trained(ckpt, backend)[0]
    return backend


def benchmark_root(benchmark: str, data_root: str | os.PathLike) -> Path:
    """Toy benchmarks live in the world; real ones under `data_root/<benchmark>`."""
    check_choice("benchmark", benchmark, TOY_BENCHMARKS + REAL_BENCHMARKS)
    data_root = Path(data_root)
    return data_root if benchmark.startswith("toy-") else data_root / benchmark


def pretrained(world_root, work_dir, steps: int, seed: int = 0, progress: bool = True):
    cfg = replace(PRETRAIN, steps=steps, seed=seed)
    return pretrain_toy_blip2(world_root, Work(work_dir).root, cfg, progress=progress)


def benchmark_features(backend, benchmark: str, root, work_dir, split: str | None = None,
                       progress: bool = True, checkpoint: str | None = None) -> list[SplitFeatures]:
    """Features of every split of a benchmark. Toy galleries keep the frozen encoder's output (so
    training can refresh them); real ones stream and cache the gallery tokens per `checkpoint`."""
    base = benchmark.replace("toy-", "")
    split = split or BENCHMARK_SPLITS[base]
    toy = benchmark.startswith("toy-")
    return [SplitFeatures(backend, s, Work(work_dir).features, progress=progress, keep_vision=toy,
                          checkpoint=checkpoint or "none")
            for s in load_benchmark(benchmark, root, split)]


def flatten(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """{method: {benchmark: metrics}} -> {benchmark: {method: metrics}} (the metrics.json layout)."""
    out: dict = {}
    for method, per_bench in results.items():
        for bench, m in per_bench.items():
            out.setdefault(bench, {})[method] = m
    return out


def training_data(backend, work_dir, store_path=None, progress: bool = True) -> TrainData:
    recs = load_training_triplets(store_path or Work(work_dir).store)
    vision = vision_features(backend, [r["image"] for r in recs], Work(work_dir).features, "unlabeled",
                             progress=progress)
    return TrainData(vision, [r["caption"] for r in recs], [r["modification"] for r in recs],
                     [r["target"] for r in recs])


def finetune(world_root, work_dir, name: str, cfg: TrainConfig, pretrain_steps: int,
             store_path=None, eval_split=None, progress: bool = True, backend=None):
    """Fine-tune on the curated store; resumable, cached by `name`.

    Without `backend`: the toy model after its stage-1 stand-in (`pretrain_steps`). With one (a
    real BLIP-2 from `models.load_blip2`): that model, as it is. Returns (backend, history).
    `eval_split`: SplitFeatures evaluated (composed R@1) at the end of each epoch.
    """
    work = Work(work_dir)
    ckpt = work.model(name)
    if is_complete(ckpt, cfg):
        backend, history, _ = load_trained(ckpt, backend)
        return backend, history
    if backend is None:
        backend, _, pre_ckpt = pretrained(world_root, work_dir, pretrain_steps, cfg.seed, progress)
    else:
        pre_ckpt = backend.name
    data = training_data(backend, work_dir, store_path, progress)
    objective = ContrastiveObjective(backend, cfg.weight_t, cfg.weight_c, cfg.similarity)

    def evaluate(b):
        eval_split.backend = b
        eval_split.refresh()
        return {"toy-cirr R@1": metrics_from_scores(eval_split.split,
                                                    method_scores(eval_split, "composed", cfg.similarity))["R@1"]}

    history = train(objective, data, cfg, ckpt, eval_fn=evaluate if eval_split else None,
                    progress=progress, desc=f"fine-tuning {name}",
                    extra={"pretrained": str(pre_ckpt), "store": str(store_path or work.store)})
    return backend, history


def evaluate_all(backend, world_root, work_dir, methods: Sequence[str], similarity: str = "meanmax",
                 benchmarks: Sequence[str] = TOY_BENCHMARKS, progress: bool = False) -> dict:
    """{benchmark: {method: metrics}} for the query methods of `inference` on every benchmark."""
    out: dict = {}
    for bench in benchmarks:
        feats = benchmark_features(backend, bench, benchmark_root(bench, world_root), work_dir, progress=progress)
        for b, per_method in flatten(evaluate_methods(feats, methods, similarity)).items():
            out.setdefault(b, {}).update(per_method)
    return out


def rename(results: dict, mapping: dict[str, str]) -> dict:
    return {b: {mapping.get(m, m): v for m, v in per.items()} for b, per in results.items()}


def save_fusion(work_dir, w: float, normalisation: str, sweep: dict) -> Path:
    return atomic_write_json(Work(work_dir).fusion, {"w": w, "normalisation": normalisation, "sweep": sweep},
                             indent=2)


def load_fusion(work_dir, default_w: float = 0.5) -> dict:
    p = Work(work_dir).fusion
    return read_json(p) if p.exists() else {"w": default_w, "normalisation": "raw", "sweep": {}}


# ----------------------------------------------------------------------------- joint inference

PRIMARY = {"toy-cirr": "R@1", "toy-circo": "mAP@5", "toy-fashioniq": "R@10",
           "cirr": "R@1", "circo": "mAP@5", "fashioniq": "R@10"}


def toy_mllm(world_root, error_scale: float = 1.0, seed: int = 0):
    """The simulated MLLM with the realistic error profile scaled by `error_scale`."""
    from .mllm import REALISTIC, SimulatedMLLM

    return SimulatedMLLM(world_root, REALISTIC.scaled(error_scale), seed=seed)


def joint_scores(backend, benchmark: str, root, work_dir, mllm, similarity: str = "meanmax",
                 split: str | None = None, progress: bool = False, checkpoint: str | None = None) -> list[dict]:
    """Per split of a benchmark: its features and the two branches' full score matrices."""
    from .joint import target_texts

    feats = benchmark_features(backend, benchmark, root, work_dir, split, progress=progress,
                               checkpoint=checkpoint)
    texts = target_texts(mllm, [f.split for f in feats], Work(work_dir).target_texts, progress=progress)
    out = []
    for f, t in zip(feats, texts):
        out.append({"features": f, "split": f.split, "texts": t,
                    "composed": method_scores(f, "composed", similarity),
                    "text": method_scores(f, "text", similarity, texts=t)})
    return out


def fused_metrics(entries: list[dict], w: float, normalisation: str = "raw") -> dict:
    """{benchmark: metrics} of the fused scores (FashionIQ: per category and the mean)."""
    from .evaluate import benchmark_metrics
    from .inference import fuse, rank_from_scores, subset_ranking

    splits = [e["split"] for e in entries]
    scores = [fuse(e["composed"], e["text"], w, normalisation) for e in entries]
    return benchmark_metrics(splits, [rank_from_scores(s) for s in scores],
                             [subset_ranking(sp, s) for sp, s in zip(splits, scores)])


def primary(benchmark: str, metrics: dict) -> float:
    return metrics[benchmark][PRIMARY[benchmark]]


def synthetic_store(world_root, work_dir, error_scale: float, seed: int = 0, progress: bool = True) -> Path:
    """A synthesis store of the pool made by the simulated MLLM at `error_scale` times the realistic
    error rates, with the ground-truth-free curation rules applied (hallucination-drift runs)."""
    from .quality import apply_auto_curation
    from .synthesis import SyntheticStore, list_images, synthesize
    from .world import open_world

    path = Work(work_dir).root / "synthetic" / f"store-errors-x{error_scale:g}.jsonl"
    pool = open_world(world_root).pool
    synthesize(list_images(pool), toy_mllm(world_root, error_scale, seed), path, image_root=pool,
               progress=progress)
    apply_auto_curation(SyntheticStore(path))
    return path


def fused_run(world_root, work_dir, name: str, cfg: TrainConfig, pretrain_steps: int, mllm,
              store_path=None, w: float = 0.5, progress: bool = True) -> dict:
    """Fine-tune (cached by `name`) and evaluate the composed, text and fused scores on every
    toy benchmark: {benchmark: {"vlm": m, "text": m, "fused": m}}."""
    backend, _ = finetune(world_root, work_dir, name, cfg, pretrain_steps, store_path, progress=progress)
    out: dict = {}
    for bench in TOY_BENCHMARKS:
        entries = joint_scores(backend, bench, benchmark_root(bench, world_root), work_dir, mllm, cfg.similarity)
        for label, ww in (("vlm", 1.0), ("text", 0.0), ("fused", w)):
            for b, m in fused_metrics(entries, ww).items():
                out.setdefault(b, {})[label] = m
    return out
