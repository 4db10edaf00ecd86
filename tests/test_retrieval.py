"""The retrieval engine: chunked top-K equals brute force; the feature cache detects staleness."""
import numpy as np
import pytest
import torch

from mvft_helpers import retrieval as R


def brute(q, g, sim):
    q, g = R.normalize(torch.as_tensor(q)), R.normalize(torch.as_tensor(g))
    s = torch.einsum("qtd,gsd->qgts", q, g).amax(dim=3)
    return (s.mean(dim=2) if sim == "meanmax" else s.amax(dim=2)).numpy()


@pytest.mark.parametrize("sim", R.SIMILARITIES)
def test_chunked_topk_equals_brute_force(sim):
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(37, 5, 16, generator=gen), torch.randn(301, 7, 16, generator=gen)
    idx, val = R.topk(q, g, k=20, similarity=sim, query_chunk=8, gallery_chunk=50)
    full = brute(q, g, sim)
    expected = np.argsort(-full, axis=1)[:, :20]
    assert (idx == expected).all()
    assert np.allclose(val, np.take_along_axis(full, expected, 1), atol=1e-5)


def test_meanmax_and_max_differ_and_text_queries_have_one_token():
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(10, 4, 8, generator=gen), torch.randn(30, 4, 8, generator=gen)
    a, _ = R.topk(q, g, k=30, similarity="meanmax")
    b, _ = R.topk(q, g, k=30, similarity="max")
    assert (a != b).any()
    text = torch.randn(10, 8, generator=gen)         # (N, D): one token each
    idx, _ = R.topk(text, g, k=5)
    assert idx.shape == (10, 5)
    with pytest.raises(ValueError, match="allowed"):
        R.topk(q, g, similarity="cosine")


def test_faiss_first_stage_is_exact_when_it_keeps_every_candidate():
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(2)
    q, g = torch.randn(20, 4, 16, generator=gen), torch.randn(200, 4, 16, generator=gen)
    exact, _ = R.topk(q, g, k=50)
    approx, _ = R.faiss_topk(q, g, k=50, n_candidates=200)
    assert R.recall_kept(exact, approx) == 100.0
    partial, _ = R.faiss_topk(q, g, k=50, n_candidates=60)
    assert 0.0 < R.recall_kept(exact, partial) < 100.0


def test_feature_cache_hits_and_detects_stale_entries(tmp_path):
    calls = []

    def compute(images):
        calls.append(list(images))
        return np.ones((len(images), 3, 4), dtype=np.float32) * len(calls)

    cache = R.FeatureCache(tmp_path)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"v1")
    key = R.CacheKey("toy-blip2", str(ckpt), ["a", "b"])
    f1, hit1 = cache.get_or_compute("gallery", key, compute)
    f2, hit2 = cache.get_or_compute("gallery", key, compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1 and np.array_equal(f1, f2)
    # another image list, another model, a changed checkpoint: each rebuilds
    cache.get_or_compute("gallery", R.CacheKey("toy-blip2", str(ckpt), ["a", "c"]), compute)
    cache.get_or_compute("gallery", R.CacheKey("other", str(ckpt), ["a", "c"]), compute)
    ckpt.write_bytes(b"version 2")
    f3, hit3 = cache.get_or_compute("gallery", R.CacheKey("other", str(ckpt), ["a", "c"]), compute)
    assert not hit3 and len(calls) == 4 and f3[0, 0, 0] == 4
    with pytest.raises(ValueError, match="computed 1 features for 2 images"):
        cache.get_or_compute("bad", key, lambda imgs: np.zeros((1, 3)))


def test_streamed_gallery_tokens_equal_the_kept_vision_path(tiny_world, tmp_path):
    """The large-gallery mode (no frozen features kept, tokens cached per checkpoint) gives the
    same features as the training mode."""
    from mvft_helpers.data import load_benchmark
    from mvft_helpers.inference import SplitFeatures
    from mvft_helpers.models import toy_backend

    backend = toy_backend()
    split = load_benchmark("toy-circo", tiny_world.root, "val")[0]
    kept = SplitFeatures(backend, split, tmp_path / "a", progress=False)
    streamed = SplitFeatures(backend, split, tmp_path / "b", progress=False, keep_vision=False,
                             checkpoint="toy-init", batch_size=16)
    assert torch.allclose(kept.gallery, streamed.gallery, atol=2e-3)
    for method in ("zero-shot-image", "composed", "zero-shot-text"):
        assert torch.allclose(kept.query_features(method), streamed.query_features(method), atol=2e-3)
    assert list((tmp_path / "b").glob("tokens-*.npy"))
    with pytest.raises(RuntimeError, match="keep_vision"):
        streamed.refresh()


@pytest.mark.parametrize("sim", R.SIMILARITIES)
def test_all_scores_in_small_blocks_equal_brute_force(sim):
    gen = torch.Generator().manual_seed(3)
    q, g = R.normalize(torch.randn(13, 4, 8, generator=gen)), R.normalize(torch.randn(57, 5, 8, generator=gen))
    blocked = R.all_scores(q, g, sim, block_bytes=4 * 4 * 5 * 3)    # forces many tiny blocks
    assert np.allclose(blocked.numpy(), brute(q, g, sim), atol=1e-5)
