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


@pytest.mark.skipif(importlib.util.find_spec("lavis") is not None, reason="this environment has LAVIS")
def test_finetune_cli_with_the_lavis_backend_points_to_its_environment(tmp_path, capsys):
    from mvft_helpers import finetune

    assert finetune.main(["--backend", "lavis", "--vlm", "pretrain_vitL", "--work-dir", str(tmp_path)]) == 2
    assert "make lavis-env" in capsys.readouterr().err


def test_model_names_parse_to_specs(tmp_path):
    assert lavis_backend.parse_model("pretrain_vitL") == LavisSpec(model_type="pretrain_vitL")
    assert lavis_backend.parse_model("random:vision_layers=2,seed=4") == LavisSpec(model_type="random",
                                                                                  vision_layers=2, seed=4)
    spec = lavis_backend.parse_model(str(tmp_path / "ft.pth"))
    assert spec.model_type == "pretrain_vitL" and spec.checkpoint == str(tmp_path / "ft.pth")
    with pytest.raises(ValueError, match="unknown option"):
        lavis_backend.parse_model("random:layers=2")
    with pytest.raises(ValueError, match="pretrain_vitL"):
        lavis_backend.parse_model("Salesforce/blip2-itm-vit-g")
