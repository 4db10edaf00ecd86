"""The LAVIS backend in the LAVIS environment: the three encodings against LAVIS's own feature
extractor, a training step with both losses, a checkpoint round trip, and the weight-file errors."""
import os
from pathlib import Path

import pytest
import torch

from mvft_helpers.lavis_backend import (LavisSpec, cached_weight, load_lavis_blip2, MODEL_TYPES, VIT_WEIGHTS,
                                        weight_cache_dir, weight_path)
from mvft_helpers.training import ContrastiveObjective, TrainConfig, load_trained, read_checkpoint, train

TEXTS = ["a red cube on grass", "two blue spheres", "one small green cone at the top left",
         "a yellow star", "nothing at all", "three purple cylinders in a row"]


def test_three_encodings_have_blip2_shapes_and_unit_tokens(random_backend, images, vision):
    b = random_backend
    assert b.preprocess(images).shape == (6, 3, 224, 224)
    assert vision.shape == (6, 257, 1024)                     # ViT-L/14 at 224: 16 x 16 patches + CLS
    with torch.no_grad():
        img, txt, comp = b.image_tokens(vision), b.text_features(TEXTS), b.composed_tokens(vision, TEXTS)
    assert img.shape == (6, 32, 256) and txt.shape == (6, 1, 256) and comp.shape == (6, 32, 256)
    for t in (img, txt, comp):
        assert torch.allclose(t.norm(dim=-1), torch.ones(t.shape[:2]), atol=1e-5)
    # the composed query depends on both the image and the text
    with torch.no_grad():
        other_text = b.composed_tokens(vision, TEXTS[::-1])
        other_image = b.composed_tokens(vision.flip(0), TEXTS)
    assert (comp - other_text).abs().amax() > 1e-3 and (comp - other_image).abs().amax() > 1e-3


def test_encodings_equal_lavis_extract_features(random_backend, images, vision):
    """Our three paths against LAVIS's own `Blip2Qformer.extract_features` on the same model."""
    b, m = random_backend, random_backend.model
    texts = ["a red cube on grass", "two blue spheres at the back"]   # same length: LAVIS pads to max_txt_len
    image = b.preprocess(images[:2])
    with torch.no_grad():
        ref_img = m.extract_features({"image": image}, mode="image")
        ref_txt = m.extract_features({"text_input": texts}, mode="text")
        ref_mm = m.extract_features({"image": image, "text_input": texts}, mode="multimodal")
        v = b.vision_features(image)
        ours_img, ours_txt = b.image_tokens(v), b.text_features(texts)
        ours_mm = b.composed_tokens(v, texts)
    assert torch.allclose(ours_img, ref_img.image_embeds_proj, atol=1e-5)
    assert torch.allclose(ours_txt[:, 0], ref_txt.text_embeds_proj[:, 0], atol=1e-5)
    expected_mm = torch.nn.functional.normalize(m.vision_proj(ref_mm.multimodal_embeds), dim=-1)
    assert torch.allclose(ours_mm, expected_mm, atol=1e-5)


def test_trainable_parameters_are_the_qformer_side(random_backend):
    names = {n for n, p in random_backend.named_parameters() if p.requires_grad}
    assert "model.query_tokens" in names
    assert any(n.startswith("model.Qformer.bert.encoder.layer.0.crossattention") for n in names)
    assert any(n.startswith("model.Qformer.bert.encoder.layer.0.intermediate_query") for n in names)
    assert {"model.vision_proj.weight", "model.text_proj.weight", "model.ln_vision.weight"} <= names
    assert not any(n.startswith(("model.visual_encoder", "model.itm_head", "model.Qformer.cls")) for n in names)
    assert "model.temp" not in names


def test_training_step_with_both_losses_lowers_the_loss_on_a_repeated_batch(tmp_path, vision, repeated_batch):
    backend = load_lavis_blip2(LavisSpec(model_type="random", vision_layers=2, seed=5))
    # Dropout off: the loss on the repeated batch is then a function of the weights alone. A random
    # BERT-base is a sharp landscape where Adam's first step moves every weight by lr whatever its
    # gradient: at lr 1e-5 the loss rises, at 1e-6 (as here) it falls (measured: 3.62 -> 3.54).
    for module in backend.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    data = repeated_batch
    objective = ContrastiveObjective(backend, weight_t=1.0, weight_c=1.0, similarity="meanmax")
    vit_before = {n: p.clone() for n, p in backend.model.visual_encoder.named_parameters()}
    q_before = backend.model.query_tokens.detach().clone()
    backend.eval()
    with torch.no_grad():
        before = objective(**data.batch(torch.arange(6)))
    assert set(before) == {"loss", "L_t", "L_c"}
    cfg = TrainConfig(steps=2, batch_size=6, lr=1e-6, warmup_steps=1, checkpoint_every=2)
    history = train(objective, data, cfg, tmp_path / "lavis.pt", progress=False)
    backend.eval()
    with torch.no_grad():
        after = objective(**data.batch(torch.arange(6)))
    assert len(history["L_t"]) == 2 and all(v == v for v in history["L_t"] + history["L_c"])
    assert history["loss"][1] < history["loss"][0]
    assert float(after["loss"]) < float(before["loss"]) - 0.02, (before, after)
    assert float(after["L_t"]) < float(before["L_t"]) and float(after["L_c"]) < float(before["L_c"])
    assert not torch.equal(backend.model.query_tokens.detach(), q_before)
    assert all(torch.equal(p, vit_before[n]) for n, p in backend.model.visual_encoder.named_parameters())

    # the checkpoint holds the trainable side only, and rebuilds the backend from its spec alone
    state = read_checkpoint(tmp_path / "lavis.pt")
    assert state["backend_spec"]["kind"] == "lavis" and state["step"] == 2
    assert not any(k.startswith("backend.model.visual_encoder") for k in state["objective"])
    rebuilt, hist2, _ = load_trained(tmp_path / "lavis.pt")
    assert hist2["loss"] == history["loss"]
    texts = data.modifications
    with torch.no_grad():
        for fn in (lambda b: b.image_tokens(vision), lambda b: b.text_features(texts),
                   lambda b: b.composed_tokens(vision, texts)):
            assert torch.allclose(fn(backend), fn(rebuilt), atol=1e-5)
        # the frozen ViT is rebuilt from the same spec (random: the same seed)
        assert torch.allclose(rebuilt.vision_features(torch.zeros(1, 3, 224, 224)),
                              backend.vision_features(torch.zeros(1, 3, 224, 224)), atol=1e-5)


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        load_lavis_blip2("pretrain_vitL")
    msg = str(e.value)
    assert "blip2_pretrained_vitL.pth" in msg and MODEL_TYPES["pretrain_vitL"]["checkpoint"] in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    # with the BLIP-2 checkpoint present, the missing ViT-L file is named next
    ck = tmp_path / "hub" / "checkpoints" / "blip2_pretrained_vitL.pth"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="clip_vit_L.pth"):
        load_lavis_blip2("pretrain_vitL")
    with pytest.raises(ValueError, match="shrink the random model only"):
        LavisSpec(model_type="pretrain_vitL", vision_layers=2)


def _real_weights_or_skip(model_type):
    urls = [MODEL_TYPES[model_type]["checkpoint"], VIT_WEIGHTS[MODEL_TYPES[model_type]["vit"]]]
    missing = [os.path.basename(u) for u in urls if not weight_path(u).is_file()]
    if missing:
        pytest.skip(f"the real {model_type} weights are not on this machine: {', '.join(missing)} missing "
                    f"from {weight_cache_dir()} (download them from the URLs "
                    f"`python -m mvft_helpers.lavis_backend check` prints)")


def test_pretrain_vitL_real_weights(images):
    """With the real weights: the paper's model loads, and matching captions beat swapped ones."""
    _real_weights_or_skip("pretrain_vitL")
    b = load_lavis_blip2("pretrain_vitL")
    assert cached_weight(MODEL_TYPES["pretrain_vitL"]["checkpoint"], "checkpoint").is_file()
    from mvft_helpers.retrieval import pairwise_scores

    texts = ["a green picture with a yellow square on the left", "a purple picture with an orange square on the right"]
    with torch.no_grad():
        v = b.vision_features(b.preprocess([images[0], images[5]]))
        s = pairwise_scores(b.text_features(texts), b.image_tokens(v), "max")
    assert v.shape == (2, 257, 1024)
    assert s.diagonal().sum() > s.fliplr().diagonal().sum()


def test_weight_cache_follows_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weight_cache_dir() == Path(tmp_path) / "hub" / "checkpoints"


def test_blip2_checkpoint_files_load_and_wrong_ones_are_refused(tmp_path, random_backend, vision):
    """The path `pretrain_vitL` takes, on files we can make: a LAVIS-format checkpoint ({"model":
    state_dict, "config": ...}) of one random model, loaded into another, gives the same outputs."""
    from mvft_helpers.lavis_backend import load_blip2_checkpoint

    source = random_backend.model
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith("visual_encoder.")}
    torch.save({"model": weights, "config": {"arch": "pretrain"}, "epoch": 9}, tmp_path / "blip2.pth")
    other = load_lavis_blip2(LavisSpec(model_type="random", vision_layers=2, seed=11))
    texts = TEXTS[:2]
    with torch.no_grad():
        assert not torch.allclose(other.composed_tokens(vision[:2], texts),
                                  random_backend.composed_tokens(vision[:2], texts), atol=1e-3)
        load_blip2_checkpoint(other.model, tmp_path / "blip2.pth")
        assert torch.allclose(other.composed_tokens(vision[:2], texts),
                              random_backend.composed_tokens(vision[:2], texts), atol=1e-5)
        assert torch.allclose(other.text_features(texts), random_backend.text_features(texts), atol=1e-5)
    partial = {k: v for k, v in weights.items() if not k.startswith("Qformer.bert.encoder.layer.3.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks"):
        load_blip2_checkpoint(other.model, tmp_path / "partial.pth")
