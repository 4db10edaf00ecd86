"""Fixtures of the LAVIS-environment tests (`make test-lavis`, run with .venv-lavis/bin/python)."""
import os
from pathlib import Path

import pytest
from PIL import Image

from mvft_helpers.lavis_backend import LavisSpec, load_lavis_blip2

REPO = Path(__file__).resolve().parents[2]
# A randomly initialised LAVIS BLIP-2: the full bert-base Q-Former (12 layers, cross-attention every
# second layer, 32 query tokens) on a 2-layer ViT of the clip_L architecture (width 1024, 257 tokens).
RANDOM = LavisSpec(model_type="random", vision_layers=2, seed=3)


@pytest.fixture(scope="session")
def random_backend():
    return load_lavis_blip2(RANDOM)


@pytest.fixture(scope="session")
def images():
    """Six small pictures that differ in colour and layout (and size: preprocessing resizes)."""
    out = []
    for i in range(6):
        im = Image.new("RGB", (96 + 8 * i, 80), (40 * i, 200 - 30 * i, 90))
        for x in range(10 * i, 10 * i + 30):
            for y in range(20, 50):
                im.putpixel((x, y), (255, 255 - 40 * i, 0))
        out.append(im)
    return out


@pytest.fixture(scope="session")
def vision(random_backend, images):
    return random_backend.vision_features(random_backend.preprocess(images))


@pytest.fixture(scope="session")
def main_python():
    """The main environment's Python, for the tests that hand files from one environment to the other."""
    py = Path(os.environ.get("MVFT_MAIN_PYTHON", REPO / ".venv" / "bin" / "python"))
    if not py.exists():
        pytest.skip(f"the main environment's Python ({py}) is missing: run `make install` (or set "
                    "MVFT_MAIN_PYTHON) to test the file contract between the two environments")
    return py


@pytest.fixture(scope="session")
def repeated_batch(vision):
    """Six triplets with captions, for a training step on the same batch over and over."""
    from mvft_helpers.training import TrainData

    n = 6
    captions = [f"a picture number {i} with a yellow box" for i in range(n)]
    mods = [f"move the box {w}" for w in ("left", "right", "up", "down", "away", "closer")][:n]
    targets = [f"the box now sits {w} of where it was" for w in ("left", "right", "above", "below", "far", "near")][:n]
    return TrainData(vision[:n].half(), captions, mods, targets)


def pytest_configure(config):
    # LAVIS 1.0.2, fairscale and transformers 4.26 warn about APIs that newer torch deprecates
    for what in ("FutureWarning", "UserWarning", "DeprecationWarning"):
        config.addinivalue_line("filterwarnings", f"ignore::{what}")
