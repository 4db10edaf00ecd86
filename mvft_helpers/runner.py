"""Execute the notebook sequence with papermill into one run folder.

    python -m mvft_helpers.runner --preset demo            # what `make demo` runs
    python -m mvft_helpers.runner --preset ci --reports build/ci-reports

Each notebook gets the parameters its `parameters` cell declares, chosen from: profile, preset,
seed, data_dir, work_dir, report_dir, and `benchmark` (a notebook that declares it runs once per
benchmark of the profile). The run folder ends with the executed notebooks, their HTML exports,
figures/*.png, metrics.json and environment.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import PRESETS, PROFILES, REPO_ROOT, check_choice, get_profile, world_config, world_dir
from .report import new_run_dir, write_environment

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(notebook_dir: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    paths = sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
        if not paths:
            raise ValueError(f"no notebook matches {only}; available: "
                             f"{[p.name for p in sorted(notebook_dir.glob('*.ipynb'))]}")
    return paths


def export_html(ipynb: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def run_notebooks(preset: str = "demo", profile: str = "toy", seed: int = 0,
                  reports: str | Path = "reports", data_dir: str | Path = "data",
                  work_dir: str | Path = "work", only: list[str] | None = None,
                  html: bool = True, extra_params: dict | None = None) -> Path:
    import papermill as pm

    check_choice("preset", preset, PRESETS)
    prof = get_profile(profile)
    data_dir, work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
    run = new_run_dir(reports).resolve()
    write_environment(run, REPO_ROOT, profile=profile, preset=preset, seed=seed)
    if profile == "toy":
        from .world import generate_world

        generate_world(world_dir(data_dir, preset, seed), world_config(preset, seed))
    base = {"profile": profile, "preset": preset, "seed": seed, "data_dir": str(data_dir),
            "work_dir": str(work_dir / f"{profile}-{preset}-seed{seed}"), "report_dir": str(run),
            **(extra_params or {})}
    for nb in notebook_paths(only=only):
        declared = pm.inspect_notebook(str(nb))
        variants = [{}]
        if "benchmark" in declared:
            variants = [{"benchmark": b} for b in prof.benchmarks]
        for extra in variants:
            params = {k: v for k, v in {**base, **extra}.items() if k in declared}
            suffix = f"_{extra['benchmark'].replace('/', '-')}" if extra else ""
            out = run / f"{nb.stem}{suffix}.ipynb"
            t0 = time.time()
            print(f"[runner] {nb.name}{' ' + str(extra) if extra else ''} ...", flush=True)
            pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent),
                                kernel_name="python3", progress_bar=False)
            if html:
                export_html(out)
            print(f"[runner] {nb.name}{suffix} done in {time.time() - t0:.0f} s", flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    ap.add_argument("--profile", default="toy", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--work-dir", default="work")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these")
    ap.add_argument("--no-html", action="store_true")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a notebook parameter (given to the notebooks that declare it)")
    a = ap.parse_args(argv)
    extra = {}
    for item in a.param:
        if "=" not in item:
            ap.error(f"--param needs NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        extra[name] = value
    t0 = time.time()
    run = run_notebooks(a.preset, a.profile, a.seed, a.reports, a.data_dir, a.work_dir, a.only,
                        html=not a.no_html, extra_params=extra)
    print(f"\nReport written to {run} (also {Path(a.reports) / 'latest'}), "
          f"in {time.time() - t0:.0f} s. Open {run}/*.html in a browser.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
