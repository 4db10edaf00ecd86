"""`make bench`: speed and memory, measured side by side in one run, printed as ratios.

    python -m mvft_helpers.bench [--only retrieval ...] [--quick]

Sections (each measures the project's way against the way a user would write first, in the same
run, on the same data, so that a noisy shared machine affects both alike):

- retrieval: chunked token-level scoring vs one einsum per query; achieved GFLOP/s vs this
  machine's measured fp32 matrix-multiply GFLOP/s; peak memory; the FAISS first stage.
- synthesis: throughput against the local OpenAI-compatible server with 200 ms latency per
  request, concurrency 16 vs sequential.
- training: one epoch with cached image features vs recomputing the image encoder every step,
  with an encoder sized to cost what ViT-L/14 costs against BLIP-2's Q-Former.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

SECTIONS: dict[str, Callable[[bool], list[tuple[str, str, str]]]] = {}


def section(name: str):
    def register(fn):
        SECTIONS[name] = fn
        return fn
    return register


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux


def _in_subprocess(worker: str, **kw) -> dict:
    """Run a worker in a fresh interpreter so that its peak memory is its own."""
    out = subprocess.run([sys.executable, "-m", "mvft_helpers.bench", "--worker", worker,
                          "--args", json.dumps(kw)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {worker} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _features(n: int, tokens: int, dim: int, seed: int, n_items: int | None = None) -> torch.Tensor:
    """Token features with the structure real ones have: the tokens of one item share a component
    (what the item shows) plus token noise. With `n_items`, the features are queries: each is a
    noisy view of one of the `n_items` gallery items (gallery seed 1)."""
    g = torch.Generator().manual_seed(1)
    n_base = n_items or n
    base = torch.nn.functional.normalize(torch.randn(n_base, dim, generator=g), dim=-1)
    g = torch.Generator().manual_seed(seed)
    if n_items is not None:
        pick = torch.randint(0, n_items, (n,), generator=g)
        base = torch.nn.functional.normalize(base[pick] + 0.08 * torch.randn(n, dim, generator=g), dim=-1)
    x = base[:, None, :] + torch.randn(n, tokens, dim, generator=g) / dim ** 0.5
    return torch.nn.functional.normalize(x, dim=-1)


def matmul_gflops(m: int = 4096, k: int = 256, n: int = 16384, repeats: int = 5) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def _worker_engine(n_q, n_g, tokens, dim, k):
    from .retrieval import topk

    q, g = _features(n_q, tokens, dim, 0, n_items=n_g), _features(n_g, tokens, dim, 1)
    t = time.perf_counter()
    idx, _ = topk(q, g, k=k, normalized=True)
    dt = time.perf_counter() - t
    np.save("/tmp/mvft_bench_exact.npy", idx)
    return {"seconds": dt, "peak_gib": _peak_rss_gib()}


def _worker_naive(n_q, n_g, tokens, dim, k):
    q, g = _features(n_q, tokens, dim, 0, n_items=n_g), _features(n_g, tokens, dim, 1)
    t = time.perf_counter()
    for i in range(n_q):   # what one writes first: one query, one einsum over the whole gallery
        s = torch.einsum("td,gsd->tgs", q[i], g).amax(dim=2).mean(dim=0)
        s.topk(k)
    dt = time.perf_counter() - t
    return {"seconds": dt, "peak_gib": _peak_rss_gib()}


def _worker_faiss(n_q, n_g, tokens, dim, k, n_candidates):
    from .retrieval import faiss_topk, recall_kept

    q, g = _features(n_q, tokens, dim, 0, n_items=n_g), _features(n_g, tokens, dim, 1)
    t = time.perf_counter()
    idx, _ = faiss_topk(q, g, k=k, n_candidates=n_candidates)
    dt = time.perf_counter() - t
    exact = np.load("/tmp/mvft_bench_exact.npy")
    return {"seconds": dt, "peak_gib": _peak_rss_gib(), "recall_kept": recall_kept(exact, idx, k)}


WORKERS = {"engine": _worker_engine, "naive": _worker_naive, "faiss": _worker_faiss}


@section("retrieval")
def bench_retrieval(quick: bool = False) -> list[tuple[str, str, str]]:
    n_q, n_g, tokens, dim, k = (1000, 20000, 32, 256, 50) if not quick else (100, 4000, 32, 256, 50)
    n_naive = max(10, n_q // 20)
    flop = 2.0 * n_q * tokens * n_g * tokens * dim
    peak = matmul_gflops()
    eng = _in_subprocess("engine", n_q=n_q, n_g=n_g, tokens=tokens, dim=dim, k=k)
    naive = _in_subprocess("naive", n_q=n_naive, n_g=n_g, tokens=tokens, dim=dim, k=k)
    fa = _in_subprocess("faiss", n_q=n_q, n_g=n_g, tokens=tokens, dim=dim, k=k, n_candidates=1000)
    per_q_engine, per_q_naive = eng["seconds"] / n_q, naive["seconds"] / n_naive
    achieved = flop / eng["seconds"] / 1e9
    return [
        ("workload", f"{n_q} queries x {n_g} items, {tokens}x{tokens} tokens, {dim} dims, mean-max",
         f"{flop / 1e12:.1f} TFLOP"),
        ("engine time", f"{eng['seconds']:.1f} s", f"{per_q_engine * 1e3:.1f} ms/query"),
        ("naive time (one einsum per query)", f"{naive['seconds']:.1f} s for {n_naive} queries",
         f"{per_q_naive * 1e3:.1f} ms/query"),
        ("speed-up engine / naive", f"{per_q_naive / per_q_engine:.2f}x", "per query, same run"),
        ("matmul fp32 peak (this machine)", f"{peak:.0f} GFLOP/s", "4096x256 @ 256x16384"),
        ("engine achieved", f"{achieved:.0f} GFLOP/s", f"{100 * achieved / peak:.0f}% of peak (target >= 50%)"),
        ("engine peak memory", f"{eng['peak_gib']:.2f} GiB", "whole process incl. features (target < 4 GiB)"),
        ("naive peak memory", f"{naive['peak_gib']:.2f} GiB", ""),
        ("FAISS first stage + exact rescoring", f"{fa['seconds']:.1f} s",
         f"{eng['seconds'] / fa['seconds']:.1f}x faster than exact, 1000 candidates"),
        ("FAISS recall@50 kept", f"{fa['recall_kept']:.1f}%", "of the exact top-50"),
    ]


@section("synthesis")
def bench_synthesis(quick: bool = False) -> list[tuple[str, str, str]]:
    import tempfile

    from .mllm import OpenAIBackend, SimulatedMLLM
    from .sim_server import Faults, running_server
    from .synthesis import list_images, synthesize
    from .world import WorldConfig, generate_world

    tmp = Path(tempfile.mkdtemp(prefix="mvft-bench-"))
    w = generate_world(tmp / "world", WorldConfig(n_pool=128, n_pretrain=0, cirr_val_sets=0, cirr_test_sets=0,
                                                  circo_val_queries=0, circo_test_queries=0,
                                                  circo_distractors=0, fiq_val_queries=0,
                                                  fiq_test_queries=0), progress=False)
    images = list_images(w.pool)
    n_seq, n_conc = (8, 96) if not quick else (4, 32)
    rows, rates = [], {}
    with running_server(SimulatedMLLM(w.root), Faults(latency=0.2)) as (url, counter):
        for label, conc, n in (("sequential", 1, n_seq), ("concurrency 16", 16, n_conc)):
            backend = OpenAIBackend(url, "simulated", concurrency=conc, timeout=30)
            t = time.perf_counter()
            summary = synthesize(images[:n], backend, tmp / f"{conc}.jsonl", chunk_size=64, progress=False)
            dt = time.perf_counter() - t
            rates[label] = summary["records"] / dt
            rows.append((f"{label}", f"{rates[label]:.2f} images/s", f"{summary['records']} images "
                         f"(3 requests each) in {dt:.1f} s"))
    rows.append(("speed-up", f"{rates['concurrency 16'] / rates['sequential']:.1f}x",
                 "target >= 8x; 200 ms server latency per request"))
    return rows


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    # Not under no_grad: FlopCounterMode's module tracker needs autograd on (forward FLOPs only).
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def paper_encoder_ratio() -> tuple[float, float, float]:
    """FLOPs of CLIP ViT-L/14 at 224 px over those of BLIP-2's Q-Former for one L_t + L_c step
    (image-only, multimodal and two text passes; 32 query and 32 text tokens), random weights."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel, CLIPVisionConfig, CLIPVisionModel

    vit_l = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                             num_attention_heads=16, image_size=224, patch_size=14)).eval()
    qf = Blip2QFormerModel(Blip2QFormerConfig(encoder_hidden_size=1024, use_qformer_text_input=True)).eval()
    img = torch.randn(1, 257, 1024)
    f_vit_l = _flops(lambda: vit_l(pixel_values=torch.randn(1, 3, 224, 224)))
    f_qf = _flops(lambda: (qf(query_embeds=torch.randn(1, 32, 768), encoder_hidden_states=img),
                           qf(query_embeds=torch.randn(1, 64, 768), query_length=32, encoder_hidden_states=img),
                           qf(query_embeds=torch.randn(1, 32, 768), query_length=0),
                           qf(query_embeds=torch.randn(1, 32, 768), query_length=0)))
    return f_vit_l / f_qf, f_vit_l, f_qf


def size_image_encoder(toy_backend, batch: int = 4) -> tuple[object, dict]:
    """A randomly initialised `transformers` ViT whose forward pass costs, relative to the toy
    Q-Former's training forward, what ViT-L/14 costs relative to BLIP-2's Q-Former."""
    from transformers import ViTConfig, ViTModel

    ratio, f_vit_l, f_qf = paper_encoder_ratio()
    vision = torch.randn(batch, 65, 384)
    texts = ["a small red circle at the top left on a gray background"] * batch
    f_toy = _flops(lambda: (toy_backend.image_tokens(vision), toy_backend.text_features(texts),
                            toy_backend.composed_tokens(vision, ["make the red circle blue"] * batch),
                            toy_backend.text_features(texts))) / batch
    per_layer = _flops(lambda: ViTModel(ViTConfig(hidden_size=384, num_hidden_layers=1, num_attention_heads=6,
                                                  intermediate_size=1536, image_size=64, patch_size=8))(
        pixel_values=torch.randn(1, 3, 64, 64)))
    layers = max(1, round(ratio * f_toy / per_layer))
    vit = ViTModel(ViTConfig(hidden_size=384, num_hidden_layers=layers, num_attention_heads=6,
                             intermediate_size=1536, image_size=64, patch_size=8)).eval()
    f_vit = _flops(lambda: vit(pixel_values=torch.randn(1, 3, 64, 64)))
    return vit, {"paper_ratio": ratio, "toy_ratio": f_vit / f_toy, "layers": layers,
                 "vit_l_gflop": f_vit_l / 1e9, "qformer_gflop": f_qf / 1e9}


@section("training")
def bench_training(quick: bool = False) -> list[tuple[str, str, str]]:
    from .models import toy_backend
    from .training import ContrastiveObjective, TrainConfig, TrainData, train

    torch.manual_seed(0)
    backend = toy_backend()
    vit, sizing = size_image_encoder(backend)
    n = 640 if not quick else 128
    pixels = torch.randn(n, 3, 64, 64)
    captions = [f"a small red circle number {i}" for i in range(n)]
    mods = [f"make circle {i} blue" for i in range(n)]
    targets = [f"a small blue circle number {i}" for i in range(n)]
    cfg = TrainConfig(steps=n // 64, batch_size=64, warmup_steps=1, checkpoint_every=10_000)

    # cached: the encoder runs once over the data (a one-time cost, shared by every epoch and run),
    # then each epoch trains only the Q-Former
    t = time.perf_counter()
    with torch.no_grad():
        cached = torch.cat([vit(pixel_values=pixels[i:i + 64]).last_hidden_state for i in range(0, n, 64)])
    t_encode = time.perf_counter() - t
    t = time.perf_counter()
    train(ContrastiveObjective(backend), TrainData(cached, captions, mods, targets), cfg, progress=False)
    t_cached = time.perf_counter() - t

    class Recompute(TrainData):
        def batch(self, rows):   # what a naive loop does: the frozen encoder in every step
            out = super().batch(rows)
            with torch.no_grad():
                out["vision"] = vit(pixel_values=pixels[rows]).last_hidden_state
            return out

    backend2 = toy_backend()
    t = time.perf_counter()
    train(ContrastiveObjective(backend2), Recompute(torch.zeros(n, 1, 1), captions, mods, targets), cfg,
          progress=False)
    t_recompute = time.perf_counter() - t
    return [
        ("image encoder sizing", f"ViT {sizing['layers']} layers x 384, 64 tokens",
         f"forward = {sizing['toy_ratio']:.1f}x the toy Q-Former's training forward; ViT-L/14 = "
         f"{sizing['paper_ratio']:.1f}x BLIP-2's Q-Former ({sizing['vit_l_gflop']:.0f} vs "
         f"{sizing['qformer_gflop']:.1f} GFLOP, FLOP-counted on random weights)"),
        ("encoding the data once", f"{t_encode:.1f} s", "one-time: cached on disk, reused by every epoch and run"),
        ("epoch, cached features", f"{t_cached:.1f} s", f"{n / t_cached:.1f} samples/s"),
        ("epoch, encoder every step", f"{t_recompute:.1f} s", f"{n / t_recompute:.1f} samples/s"),
        ("speed-up per epoch", f"{t_recompute / t_cached:.2f}x", "target >= 3x; same data, same seed"),
        ("speed-up over 10 epochs", f"{10 * t_recompute / (t_encode + 10 * t_cached):.2f}x",
         "one-time encoding included"),
    ]


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\n## {title}\n")
    print(f"| {'measure':<{w0}} | {'value':<{w1}} | note |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|------|")
    for a, b, c in rows:
        print(f"| {a:<{w0}} | {b:<{w1}} | {c} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="sections to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(WORKERS[a.worker](**json.loads(a.args))))
        return 0
    names = a.only or list(SECTIONS)
    unknown = set(names) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown bench sections {sorted(unknown)}; allowed: {list(SECTIONS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in names:
        t = time.perf_counter()
        rows = SECTIONS[name](a.quick)
        print_table(f"{name} ({time.perf_counter() - t:.0f} s)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
