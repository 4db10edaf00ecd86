"""The package imports in the LAVIS environment (transformers 4.26, NumPy 1.26): every backend
imports its heavy dependencies lazily, so the core modules work under either transformers."""
import importlib
import pkgutil

import transformers

import mvft_helpers


def test_every_module_imports_under_transformers_4():
    assert transformers.__version__.startswith("4.26")
    names = [m.name for m in pkgutil.iter_modules(mvft_helpers.__path__)]
    assert {"data", "metrics", "retrieval", "synthesis", "training", "lavis_backend"} <= set(names)
    for name in names:
        importlib.import_module(f"mvft_helpers.{name}")
