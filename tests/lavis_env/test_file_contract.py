"""Files are the contract between the two environments: a synthetic store written by the main
environment trains the LAVIS model here; the features and the checkpoint written here are read,
and retrieved from, by the main environment (its transformers 5 and NumPy 2)."""
import json
import subprocess

import numpy as np
import torch

from mvft_helpers import pipeline
from mvft_helpers.inference import composed_tokens, image_tokens
from mvft_helpers.retrieval import CacheKey, FeatureCache, topk
from mvft_helpers.synthesis import load_training_triplets
from mvft_helpers.training import ContrastiveObjective, TrainConfig, read_checkpoint, train
from mvft_helpers.world import WorldConfig

TINY = WorldConfig(seed=7, n_pool=40, n_pretrain=40, cirr_val_sets=10, cirr_test_sets=10,
                   circo_val_queries=12, circo_test_queries=6, circo_distractors=40,
                   fiq_val_queries=10, fiq_test_queries=6)

WRITE_STORE = """
import json, sys
from pathlib import Path
from mvft_helpers.world import WorldConfig, generate_world
from mvft_helpers.pipeline import synthetic_store
work = Path(sys.argv[1])
root = generate_world(work / "world", WorldConfig(**json.loads(sys.argv[2])), progress=False).root
print(json.dumps({"store": str(synthetic_store(root, work, error_scale=1.0, progress=False))}))
"""

READ_BACK = """
import json, sys
import numpy as np, transformers
from mvft_helpers.retrieval import CacheKey, FeatureCache, topk
from mvft_helpers.training import TrainConfig, is_complete, read_checkpoint
a = json.loads(sys.argv[1])
cache = FeatureCache(a["cache_dir"])
gallery = cache.load("gallery", CacheKey(**a["gallery_key"]))
queries = cache.load("queries", CacheKey(**a["query_key"]))
idx, _ = topk(np.asarray(queries), np.asarray(gallery), k=3)
state = read_checkpoint(a["checkpoint"])
print(json.dumps({"transformers": transformers.__version__, "numpy": np.__version__,
                  "top3": idx.tolist(), "complete": is_complete(a["checkpoint"], TrainConfig(**state["config"])),
                  "spec": state["backend_spec"], "loss": state["history"]["loss"],
                  "query_tokens_sum": float(state["objective"]["backend.model.query_tokens"].double().sum())}))
"""


def _run(main_python, code, *args):
    out = subprocess.run([str(main_python), "-c", code, *map(str, args)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_store_from_main_env_trains_here_and_features_and_checkpoint_go_back(tmp_path, main_python, random_backend):
    from dataclasses import asdict

    # main environment -> here: the toy world's synthetic store (simulated MLLM, auto-curated)
    store = _run(main_python, WRITE_STORE, tmp_path, json.dumps(asdict(TINY)))["store"]
    recs = load_training_triplets(store)
    assert len(recs) >= 30 and all(r["target"] and r["modification"] for r in recs)
    data = pipeline.training_data(random_backend, tmp_path, store, progress=False)
    assert data.vision.shape == (len(recs), 257, 1024)

    # train on it, with a checkpoint
    ckpt = tmp_path / "models" / "lavis-vlm.pt"
    cfg = TrainConfig(steps=1, batch_size=8, lr=1e-6, warmup_steps=1)
    history = train(ContrastiveObjective(random_backend), data, cfg, ckpt, progress=False)

    # here -> main environment: gallery tokens and composed queries through the feature cache
    random_backend.eval()
    images = [r["image"] for r in recs]
    cache = FeatureCache(tmp_path / "features")
    gkey = CacheKey(model=random_backend.name + "/image-tokens", checkpoint=str(ckpt), images=images)
    qkey = CacheKey(model=random_backend.name + "/composed", checkpoint=str(ckpt),
                    images=[f"{r['image']}|{r['modification']}" for r in recs])
    with torch.no_grad():
        gallery, _ = cache.get_or_compute("gallery", gkey, lambda _: image_tokens(random_backend, data.vision).numpy())
        queries, _ = cache.get_or_compute("queries", qkey,
                                          lambda _: composed_tokens(random_backend, data.vision, data.modifications).numpy())
    ours, _ = topk(np.asarray(queries), np.asarray(gallery), k=3)
    got = _run(main_python, READ_BACK, json.dumps({
        "cache_dir": str(tmp_path / "features"), "checkpoint": str(ckpt),
        "gallery_key": asdict(gkey), "query_key": asdict(qkey)}))
    assert got["transformers"].split(".")[0] != "4" and got["numpy"].split(".")[0] != "1", got  # the other env
    assert got["top3"] == ours.tolist()
    assert got["complete"] is True and got["spec"]["kind"] == "lavis"
    assert got["loss"] == history["loss"]
    state = read_checkpoint(ckpt)
    assert abs(got["query_tokens_sum"] - float(state["objective"]["backend.model.query_tokens"].double().sum())) < 1e-9
