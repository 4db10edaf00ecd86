"""Undefined names and unused imports are bugs waiting to happen (pyflakes rules via ruff)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None and not (ROOT / ".venv/bin/ruff").exists(),
                    reason="ruff is in the dev extra; install it with pip install -e '.[dev]'")
def test_package_and_tests_pass_pyflakes_rules():
    ruff = shutil.which("ruff") or str(ROOT / ".venv/bin/ruff")
    out = subprocess.run([ruff, "check", "--select", "F,E9", "--output-format", "concise", "mvft_helpers", "tests"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
