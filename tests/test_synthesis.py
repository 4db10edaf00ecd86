"""The synthesis store: resumable (kill -9 included), repair then reject, curation beside it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mvft_helpers.mllm import REALISTIC, SimulatedErrors, SimulatedMLLM
from mvft_helpers.sim_server import Faults, running_server
from mvft_helpers.synthesis import PromptSet, SyntheticStore, list_images, load_training_triplets, synthesize

STABLE = ("id", "image_id", "caption", "modification", "target", "prompt_version", "status", "reason")


def stable(records):
    return sorted((tuple(r.get(k) for k in STABLE) for r in records))


def test_synthesis_writes_one_record_per_image_and_resumes(tiny_world, tmp_path):
    sim = SimulatedMLLM(tiny_world.root, REALISTIC)
    images = list_images(tiny_world.pool)
    out = tmp_path / "store.jsonl"
    first = synthesize(images, sim, out, chunk_size=8, limit=15, progress=False)
    assert first["records"] == 15
    second = synthesize(images, sim, out, chunk_size=8, progress=False)
    assert second["records"] == len(images)
    recs = SyntheticStore(out).records()
    assert len({r["id"] for r in recs}) == len(recs) == len(images)
    synthesize(images, sim, tmp_path / "fresh.jsonl", chunk_size=64, progress=False)
    assert stable(recs) == stable(SyntheticStore(tmp_path / "fresh.jsonl").records())
    import pandas as pd
    assert isinstance(SyntheticStore(out).dataframe(), pd.DataFrame)
    # a new prompt version makes new records beside the old ones
    synthesize(images[:3], sim, out, PromptSet(caption="caption/v1"), progress=False)
    assert len(SyntheticStore(out).records()) == len(images) + 3


def test_truncated_last_line_is_recovered_and_redone(tiny_world, tmp_path):
    sim = SimulatedMLLM(tiny_world.root)
    images = list_images(tiny_world.pool)[:10]
    out = tmp_path / "store.jsonl"
    synthesize(images, sim, out, progress=False)
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:6]) + lines[6][: len(lines[6]) // 2])   # killed mid-write
    store = SyntheticStore(out)
    assert len(store.records()) == 6
    assert store.recover() == len(lines[6]) // 2
    synthesize(images, sim, out, progress=False)
    assert stable(SyntheticStore(out).records()) == stable(json.loads(l) for l in lines)


def test_malformed_answers_are_repaired_once_then_rejected_with_a_reason(tiny_world, tmp_path):
    images = list_images(tiny_world.pool)
    always_bad = SimulatedMLLM(tiny_world.root, SimulatedErrors(malformed_json=1.0), repair_success=0.0)
    s = synthesize(images, always_bad, tmp_path / "bad.jsonl", progress=False)
    assert s["accepted"] == 0 and s["rejected"] == len(images)
    assert all("(after repair)" in reason for reason in s["rejected_by_reason"])
    rec = SyntheticStore(tmp_path / "bad.jsonl").records()[0]
    assert rec["raw"] and rec["status"] == "rejected"
    repaired = SimulatedMLLM(tiny_world.root, SimulatedErrors(malformed_json=1.0), repair_success=1.0)
    assert synthesize(images, repaired, tmp_path / "ok.jsonl", progress=False)["accepted"] == len(images)


def test_curation_is_a_separate_file_and_training_reads_it(tiny_world, tmp_path):
    out = tmp_path / "store.jsonl"
    synthesize(list_images(tiny_world.pool)[:6], SimulatedMLLM(tiny_world.root), out, progress=False)
    store = SyntheticStore(out)
    raw = out.read_bytes()
    ids = [r["id"] for r in store.records()]
    store.curate(ids[0], "reject")
    store.curate(ids[1], "edit", target="A large red circle in the center on a gray background.")
    assert out.read_bytes() == raw
    trained = {r["id"]: r for r in load_training_triplets(out)}
    assert ids[0] not in trained and len(trained) == 5
    assert trained[ids[1]]["target"].startswith("A large red circle") and trained[ids[1]]["edited"]
    store.curate(ids[0], "accept")
    assert ids[0] in {r["id"] for r in load_training_triplets(out)}
    with pytest.raises(ValueError, match="allowed"):
        store.curate(ids[0], "approve")
    with pytest.raises(ValueError, match="can be edited"):
        store.curate(ids[0], "edit", image="x.png")


def test_kill_9_mid_run_then_resume_loses_and_duplicates_nothing(tiny_world, tmp_path):
    """The command-line run against the local OpenAI-compatible server, killed with SIGKILL."""
    sim = SimulatedMLLM(tiny_world.root, REALISTIC)
    out = tmp_path / "store.jsonl"
    images = list_images(tiny_world.pool)
    with running_server(sim, Faults(latency=0.02)) as (url, _):
        cmd = [sys.executable, "-m", "mvft_helpers.synthesize", "--images", str(tiny_world.pool),
               "--backend", "openai", "--base-url", url, "--model", "simulated", "--out", str(out),
               "--concurrency", "4", "--chunk-size", "4"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 8):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = out.read_bytes().count(b"\n")
        assert 8 <= partial < len(images), "the kill should land mid-run"
        assert subprocess.run(cmd, capture_output=True).returncode == 0
    recs = SyntheticStore(out).records()
    assert len(recs) == len({r["id"] for r in recs}) == len(images)
    direct = synthesize(images, sim, tmp_path / "direct.jsonl", image_root=tiny_world.pool, progress=False)
    assert stable(recs) == stable(SyntheticStore(tmp_path / "direct.jsonl").records())
    assert direct["records"] == len(images)


def test_cli_reports_bad_input(tmp_path, capsys):
    from mvft_helpers.synthesize import main
    assert main(["--images", str(tmp_path / "none"), "--backend", "simulated", "--world", str(tmp_path),
                 "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["--images", str(tmp_path), "--backend", "openai", "--model", "m",
                 "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "--base-url" in capsys.readouterr().err
