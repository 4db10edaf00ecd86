import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mvft_helpers.world import WorldConfig, generate_world  # noqa: E402

# tests/lavis_env/ runs in the LAVIS environment (`make test-lavis`); elsewhere it is not collected.
try:
    import lavis  # noqa: F401
except ImportError:
    collect_ignore = ["lavis_env"]

FIXTURES = Path(__file__).parent / "fixtures"
# Small enough to generate in a second or two, large enough to hold every kind of record.
TINY = WorldConfig(seed=7, n_pool=40, n_pretrain=40, cirr_val_sets=10, cirr_test_sets=10,
                   circo_val_queries=12, circo_test_queries=6, circo_distractors=40,
                   fiq_val_queries=10, fiq_test_queries=6)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world") / "toy", TINY, progress=False)
