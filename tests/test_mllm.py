"""The MLLM backends: simulated (against ground truth), OpenAI-compatible (against a local server
with faults), and transformers (a tiny image-text-to-text model built here from a config)."""
import json
import threading

import pytest

from mvft_helpers import toylang as tl, toyworld as tw
from mvft_helpers.mllm import (ChatRequest, OpenAIBackend, REALISTIC, SimulatedErrors, SimulatedMLLM,
                               TransformersBackend, make_backend)
from mvft_helpers.prompts import ContractError, get_prompt
from mvft_helpers.sim_server import Faults, running_server
from mvft_helpers.synthesis import list_images


def pool(world, n=None):
    return list_images(world.pool)[:n]


def req(prompt_id, image, **fill):
    p = get_prompt(prompt_id)
    return ChatRequest(str(image), p.render(**fill), str(image), p.system)


def test_error_free_simulator_describes_exactly_what_is_there(tiny_world):
    sim = SimulatedMLLM(tiny_world.root)
    for image in pool(tiny_world):
        scene = sim.scene_of_path(image)
        cap = get_prompt("caption/v2").parse(sim.generate([req("caption/v2", image)])[0])["caption"]
        assert tl.compare_description(cap, scene)["exact"] == 1
        mod = get_prompt("modification/v1").parse(sim.generate([req("modification/v1", image)])[0])["modification"]
        target = get_prompt("target_text/v2").parse(
            sim.generate([req("target_text/v2", image, modification=mod)])[0])["target"]
        expected = tw.apply_modification(scene, tl.interpret(scene, mod))
        assert tl.compare_description(target, expected)["exact"] == 1, (mod, target)


def test_error_knobs_produce_errors_at_about_their_rates(tiny_world):
    images = pool(tiny_world)
    rates = {}
    for name in ("invent_object", "malformed_json"):
        sim = SimulatedMLLM(tiny_world.root, SimulatedErrors(**{name: 0.5}), seed=1)
        hits = 0
        for image in images:
            answer = sim.generate([req("caption/v2", image)])[0]
            try:
                cap = get_prompt("caption/v2").parse(answer)["caption"]
                hits += name == "invent_object" and tl.compare_description(cap, sim.scene_of_path(image))["invented"] > 0
            except ContractError:
                hits += name == "malformed_json"
        rates[name] = hits / len(images)
    assert 0.3 < rates["invent_object"] < 0.7 and 0.3 < rates["malformed_json"] < 0.7, rates


def test_prompt_instructions_change_the_simulated_answers(tiny_world):
    sim = SimulatedMLLM(tiny_world.root, REALISTIC)
    exact = {}
    for pid in ("caption/v1", "caption/v2"):
        ok = 0
        for image in pool(tiny_world):
            cap = sim.generate([req(pid, image)])[0]
            try:
                ok += tl.compare_description(get_prompt(pid).parse(cap)["caption"], sim.scene_of_path(image))["exact"]
            except ContractError:
                pass
        exact[pid] = ok
    assert exact["caption/v2"] > exact["caption/v1"], exact


def test_bad_knob_values_are_rejected():
    with pytest.raises(ValueError, match="probability"):
        SimulatedErrors(vague=1.5)
    with pytest.raises(ValueError, match="allowed values"):
        make_backend("llava")


# ---------------------------------------------------------------- OpenAI-compatible backend
def test_openai_backend_through_a_faulty_server_gives_the_simulators_answers(tiny_world, monkeypatch):
    sim = SimulatedMLLM(tiny_world.root, REALISTIC)
    images = pool(tiny_world, 30)
    requests = [req("caption/v2", im) for im in images]
    direct = sim.generate(requests)
    monkeypatch.setenv("MVFT_TEST_KEY", "sk-secret-123")
    faults = Faults(latency=0.01, http_500=0.2, timeout=0.1, timeout_after=1.5, seed=3)
    with running_server(sim, faults) as (url, counter):
        backend = OpenAIBackend(url, "simulated", api_key_env="MVFT_TEST_KEY", concurrency=8,
                                timeout=0.5, retries=8, backoff=0.01)
        answers = backend.generate(requests)
    assert answers == direct
    assert counter["http_500"] > 0 and counter["timeouts"] > 0
    assert "sk-secret" not in json.dumps(backend.describe())


def test_openai_backend_gives_up_with_a_clear_error_and_bounds_concurrency(tiny_world):
    sim = SimulatedMLLM(tiny_world.root)
    active, peak, lock = [0], [0], threading.Lock()
    original = sim.answer

    def counting(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            import time
            time.sleep(0.05)
            return original(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    sim.answer = counting
    with running_server(sim) as (url, _):
        backend = OpenAIBackend(url, "simulated", concurrency=4, timeout=5)
        backend.generate([req("caption/v2", im) for im in pool(tiny_world, 20)])
    assert 1 < peak[0] <= 4
    with running_server(sim, Faults(http_500=1.0)) as (url, _):
        out = OpenAIBackend(url, "m", retries=2, backoff=0.001).generate([req("caption/v2", pool(tiny_world, 1)[0])])
    assert "gave up after 3 attempts: HTTP 500" in str(out[0])


# ---------------------------------------------------------------- transformers backend
@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A LLaVA-architecture image-text-to-text model with random weights and MiniLM's tokenizer,
    saved to disk and loaded back through the Auto classes, as a real checkpoint would be."""
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    from mvft_helpers.models import minilm_path
    import torch

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default")
    path = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_transformers_backend_batches_like_it_runs_alone(tiny_llava, tiny_world):
    images = pool(tiny_world, 3)
    requests = [req("caption/v2", images[0]), ChatRequest("t", "Describe the shapes.", str(images[1]), "Be brief."),
                ChatRequest("n", "No image in this one."), req("target_text/v1", images[2], modification="make it red")]
    batched = TransformersBackend(str(tiny_llava), batch_size=4, max_new_tokens=6).generate(requests)
    alone = TransformersBackend(str(tiny_llava), batch_size=1, max_new_tokens=6).generate(requests)
    assert batched == alone
    assert all(isinstance(a, str) and a.strip() for a in batched)


def test_minicpm_needs_an_explicit_opt_in():
    with pytest.raises(ValueError, match="trust_remote_code=True and revision"):
        TransformersBackend("openbmb/MiniCPM-V-2_6", kind="minicpm-v")
