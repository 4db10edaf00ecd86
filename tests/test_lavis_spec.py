"""The LAVIS backend from the main environment: its module imports without LAVIS, and using it says
which environment to use. (The backend itself is tested in tests/lavis_env/, in .venv-lavis.)"""
import importlib.util

import pytest

from mvft_helpers import lavis_backend
from mvft_helpers.lavis_backend import LavisSpec


@pytest.mark.skipif(importlib.util.find_spec("lavis") is not None, reason="this environment has LAVIS")
def test_without_lavis_the_error_names_the_environment_to_use():
    with pytest.raises(ImportError, match="make lavis-env"):
        lavis_backend.load_lavis_blip2(LavisSpec(model_type="random", vision_layers=1))
    assert lavis_backend.main(["check"]) == 2


def test_spec_rejects_unknown_types_and_shrinking_a_pretrained_model():
    with pytest.raises(ValueError, match="pretrain_vitL"):
        LavisSpec(model_type="vit-L")
    with pytest.raises(ValueError, match="random model only"):
        LavisSpec(model_type="pretrain_vitL", qformer_layers=2)
    assert LavisSpec().vit == "clip_L" and LavisSpec(model_type="pretrain").vit == "eva_clip_g"
