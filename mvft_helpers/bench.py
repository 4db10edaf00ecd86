"""`make bench`: speed and memory, measured side by side in one run, printed as ratios.

    python -m mvft_helpers.bench [--only retrieval ...] [--quick]

Sections (each measures the project's way against the way a user would write first, in the same
run, on the same data, so that a noisy shared machine affects both alike):

- retrieval: chunked token-level scoring vs one einsum per query; achieved GFLOP/s vs this
  machine's measured fp32 matrix-multiply GFLOP/s; peak memory; the FAISS first stage.
Other sections are registered by the modules that own them (see SECTIONS).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
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
    _load_sections()
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


def _load_sections() -> None:
    """Import the modules that register their own bench sections."""
    import importlib

    for mod in ("mvft_helpers.synthesis", "mvft_helpers.training"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


if __name__ == "__main__":
    sys.exit(main())
