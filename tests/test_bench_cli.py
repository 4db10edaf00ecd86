"""The benchmark and fine-tuning commands run and report (speed itself is not asserted)."""
import subprocess
import sys

from mvft_helpers.finetune import main as finetune_main


def test_bench_quick_prints_its_tables():
    out = subprocess.run([sys.executable, "-m", "mvft_helpers.bench", "--only", "retrieval", "synthesis",
                          "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("speed-up engine / naive", "engine achieved", "FAISS recall@50 kept", "concurrency 16"):
        assert row in out.stdout


def test_finetune_cli_reports_bad_input(tmp_path, capsys):
    assert finetune_main(["--vlm", "toy", "--work-dir", str(tmp_path)]) == 2
    assert "--world" in capsys.readouterr().err
    assert finetune_main(["--vlm", str(tmp_path / "no-such-model"), "--work-dir", str(tmp_path)]) == 2
    assert "could not load BLIP-2 weights" in capsys.readouterr().err
