"""Notebooks 03 and 05 on the paper profile with `backend="lavis"`, end to end under papermill.

The real weights are not here, so the model is LAVIS's BLIP-2 randomly initialised
(`vlm_model="random:vision_layers=2"`); the data is a toy world, whose benchmark folders are
written in the real CIRR layout, and the MLLM is the simulated one behind the OpenAI-compatible
loopback server. What this checks is the paper path's plumbing (fine-tune on a store, reload the
checkpoint, features, t' over HTTP, metrics, submission files), not retrieval quality."""
import json
from pathlib import Path

import papermill as pm

from mvft_helpers.pipeline import Work, toy_mllm
from mvft_helpers.sim_server import running_server
from mvft_helpers.synthesis import list_images, synthesize
from mvft_helpers.world import WorldConfig, generate_world

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY = WorldConfig(seed=9, n_pool=40, n_pretrain=40, cirr_val_sets=8, cirr_test_sets=6,
                   circo_val_queries=6, circo_test_queries=4, circo_distractors=20,
                   fiq_val_queries=6, fiq_test_queries=4)


def _run(name, out_dir, params):
    out = out_dir / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, cwd=str(NOTEBOOKS),
                        kernel_name="python3", progress_bar=False)
    return out


def test_notebooks_03_and_05_run_the_paper_profile_with_lavis(tmp_path):
    world = generate_world(tmp_path / "data" / "toy", TINY, progress=False)
    work, report = tmp_path / "work", tmp_path / "report"
    synthesize(list_images(world.pool), toy_mllm(world.root), Work(work).store, image_root=world.pool,
               progress=False)
    common = {"profile": "paper", "data_dir": str(tmp_path / "data"), "work_dir": str(work),
              "report_dir": str(report), "backend": "lavis", "vlm_model": "random:vision_layers=2"}

    nb03 = _run("03_qformer_finetuning.ipynb", tmp_path,
                {**common, "steps": 2, "batch_size": 8, "lr": 1e-6})
    ckpt = Work(work).model("vlm")
    assert ckpt.exists()
    text = nb03.read_text()
    assert "lavis:random" in text and "skipped on the paper profile" in text

    with running_server(toy_mllm(world.root)) as (url, counter):
        _run("05_evaluate.ipynb", tmp_path,
             {**common, "benchmark": "cirr", "dataset_root": str(world.cirr), "mllm_base_url": url,
              "mllm_model": "simulated"})
    assert sum(counter.values()) > 0                       # t' came over HTTP
    metrics = json.loads((report / "metrics.json").read_text())
    assert {"vlm", "text", "fused", "fused-tuned"} <= set(metrics["cirr"])
    assert 0.0 <= metrics["cirr"]["fused"]["R@1"] <= 100.0
    subs = sorted(p.name for p in (report / "submissions" / "cirr").iterdir())
    assert subs and all(s.endswith(".json") for s in subs)
