import pytest

from mvft_helpers import config


def test_unknown_profile_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"unknown profile 'gpu'.*'toy'.*'paper'"):
        config.get_profile("gpu")
    assert config.get_profile("toy").benchmarks == ("toy-cirr", "toy-circo", "toy-fashioniq")


def test_unknown_preset_lists_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*'demo'.*'ci'"):
        config.world_config("huge")
    with pytest.raises(ValueError, match="allowed values"):
        config.world_dir(tmp_path, "huge")


def test_presets_differ_in_size_and_keep_the_seed():
    ci, demo = config.world_config("ci", seed=3), config.world_config("demo", seed=3)
    assert ci.seed == demo.seed == 3
    assert ci.n_pool < demo.n_pool and ci.n_pretrain < demo.n_pretrain
