"""The two InfoNCE losses and the training loop: learning, switching losses off, resuming."""
import math

import pytest
import torch

from mvft_helpers.models import ToyConfig, toy_backend
from mvft_helpers.training import ContrastiveObjective, TrainConfig, TrainData, info_nce, load_trained, train


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    n = 24
    colors = ["red", "blue", "green", "yellow", "white", "pink"]
    shapes = ["circle", "square", "star", "cross"]
    caps = [f"a large {colors[i % 6]} {shapes[i % 4]} on the left" for i in range(n)]
    return TrainData(torch.randn(n, 65, 384, generator=g).half(), caps,
                     [f"make the {shapes[i % 4]} {colors[(i + 1) % 6]}" for i in range(n)],
                     [f"a large {colors[(i + 1) % 6]} {shapes[i % 4]} on the left" for i in range(n)])


def test_info_nce_is_log_batch_size_at_chance_and_zero_when_separated():
    scale = torch.tensor(math.log(1 / 0.07))
    assert info_nce(torch.zeros(8, 8), scale).item() == pytest.approx(math.log(8), rel=1e-5)
    assert info_nce(torch.eye(8) * 2 - 1, scale).item() < 1e-6


def test_weights_switch_either_loss_off(data):
    b = toy_backend(ToyConfig(qformer_layers=1))
    batch = data.batch(torch.arange(8))
    assert set(ContrastiveObjective(b, 1, 1)(**batch)) == {"loss", "L_t", "L_c"}
    assert set(ContrastiveObjective(b, 0, 1)(**batch)) == {"loss", "L_c"}
    assert set(ContrastiveObjective(b, 1, 0)(**batch)) == {"loss", "L_t"}
    with pytest.raises(ValueError, match="not both 0"):
        ContrastiveObjective(b, 0, 0)
    with pytest.raises(ValueError, match="allowed"):
        TrainConfig(similarity="cosine")


def test_image_encoder_stays_frozen_and_training_lowers_the_loss(data):
    b = toy_backend(ToyConfig(qformer_layers=1))
    vision_before = {k: v.clone() for k, v in b.model.vision_model.state_dict().items()}
    cfg = TrainConfig(steps=30, batch_size=8, lr=1e-3, warmup_steps=2)
    h = train(ContrastiveObjective(b), data, cfg, progress=False)
    assert sum(h["loss"][-5:]) < sum(h["loss"][:5])
    assert all(torch.equal(v, b.model.vision_model.state_dict()[k]) for k, v in vision_before.items())


def test_an_interrupted_run_resumes_to_the_same_weights(data, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=3, grad_accum=2)

    def run(ckpt, fail_at=None):
        b = toy_backend(ToyConfig(qformer_layers=1))
        calls = {"n": 0}

        class Failing(TrainData):
            def batch(self, rows):
                calls["n"] += 1
                if fail_at is not None and calls["n"] > fail_at:
                    raise KeyboardInterrupt("killed")
                return super().batch(rows)

        d = Failing(data.vision, data.captions, data.modifications, data.targets)
        train(ContrastiveObjective(b), d, cfg, ckpt, progress=False)
        return b

    whole = run(tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut.pt", fail_at=8)          # 4 optimizer steps of 2 micro-batches, then killed
    assert torch.load(tmp_path / "cut.pt", weights_only=False)["step"] == 3
    resumed = run(tmp_path / "cut.pt")
    for (k, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), k
    backend, history, _ = load_trained(tmp_path / "cut.pt")
    assert history["step"] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="another TrainConfig"):
        train(ContrastiveObjective(backend), data, TrainConfig(steps=7, batch_size=8), tmp_path / "cut.pt",
              progress=False)
