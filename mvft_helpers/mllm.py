"""MLLM backends behind one interface: `backend.generate(requests) -> answers`.

1. `OpenAIBackend`: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted
   APIs). Images go as base64 `image_url` parts; requests run with bounded concurrency, timeouts
   and retries with exponential backoff; the API key is read from an environment variable at
   request time and is never stored, logged or returned.
2. `TransformersBackend`: a local model. Native image-text-to-text models through
   `AutoModelForImageTextToText` and their chat template, batched; or MiniCPM-V-2.6 through
   `trust_remote_code` and `model.chat` (explicit opt-in with a pinned revision).
3. `SimulatedMLLM`: the toy world's stand-in. It perceives an image by looking up the generator's
   ground truth, reads the prompt's output contract and instructions, and answers through the
   same contract, with knobs for realistic errors. It is a teaching and CI device: its error
   behaviour is a model we chose, not a measurement of any real MLLM.

A request is one image (or none), one prompt and, for a repair, the earlier turns.
"""
from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from . import toylang as tl
from . import toyworld as tw
from .config import check_choice
from .prompts import requested_fields

BACKENDS = ("simulated", "openai", "transformers")


@dataclass
class ChatRequest:
    key: str                                   # identifies the request (determinism, logs)
    prompt: str                                # the user text
    image: str | None = None                   # path to an image file
    system: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)   # earlier (user, assistant) turns

    def followup(self, answer: str, text: str) -> "ChatRequest":
        """The same conversation with the model's answer and a new user turn (for a repair)."""
        return ChatRequest(self.key, text, self.image, self.system,
                           self.history + [(self.prompt, answer)])


class BackendError(RuntimeError):
    """A request failed for good (after the retries); the run goes on without its record."""


class MLLMBackend:
    name = "mllm"
    model = ""

    def generate(self, requests: Sequence[ChatRequest]) -> list[str | BackendError]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model}


# ----------------------------------------------------------------------------- 1. OpenAI-compatible

def image_data_url(path: str | os.PathLike) -> str:
    """The file's own bytes as a data URL (no re-encoding)."""
    data = Path(path).read_bytes()
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def openai_messages(req: ChatRequest) -> list[dict]:
    msgs = [{"role": "system", "content": req.system}] if req.system else []
    turns = req.history + [(req.prompt, None)]
    for i, (user, assistant) in enumerate(turns):
        if i == 0 and req.image:
            content = [{"type": "image_url", "image_url": {"url": image_data_url(req.image)}},
                       {"type": "text", "text": user}]
        else:
            content = user
        msgs.append({"role": "user", "content": content})
        if assistant is not None:
            msgs.append({"role": "assistant", "content": assistant})
    return msgs


class OpenAIBackend(MLLMBackend):
    """An OpenAI-compatible `/chat/completions` endpoint.

    `stop`: stop strings (MiniCPM-V-2.6 on vLLM: ["<|im_end|>", "<|endoftext|>"]); `extra_body`:
    server-specific fields merged into the request (e.g. vLLM's {"stop_token_ids": [...]}).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 16, timeout: float = 60.0, retries: int = 4, backoff: float = 0.5,
                 max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None,
                 extra_body: dict | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency, self.timeout = concurrency, timeout
        self.retries, self.backoff = retries, backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        self.stop = list(stop) if stop else None
        self.extra_body = dict(extra_body or {})
        self._local = threading.local()

    def describe(self) -> dict:   # never the key
        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                "api_key_env": self.api_key_env}

    def _client(self):
        import httpx

        if getattr(self._local, "client", None) is None:
            self._local.client = httpx.Client(timeout=self.timeout)
        return self._local.client

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _one(self, req: ChatRequest) -> str | BackendError:
        import httpx

        body = {"model": self.model, "messages": openai_messages(req), "max_tokens": self.max_tokens,
                "temperature": self.temperature, **self.extra_body}
        if self.stop:
            body["stop"] = self.stop
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                r = self._client().post(f"{self.base_url}/chat/completions", json=body,
                                        headers=self._headers())
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout:.0f} s"
                continue
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}"
                continue
            if r.status_code in (401, 403):
                return BackendError(f"HTTP {r.status_code}: check the API key in ${self.api_key_env}")
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code != 200:
                return BackendError(f"HTTP {r.status_code}: {r.text[:200]}")
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError):
                last = "response is not a chat completion"
                continue
        return BackendError(f"gave up after {self.retries + 1} attempts: {last}")

    def generate(self, requests: Sequence[ChatRequest]) -> list[str | BackendError]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, requests))


# ----------------------------------------------------------------------------- 2. transformers

class TransformersBackend(MLLMBackend):
    """A local model through `transformers`.

    kind="image-text-to-text": any model `AutoModelForImageTextToText` loads, prompted with its
    processor's chat template, batched.
    kind="minicpm-v": MiniCPM-V-2.6 (`openbmb/MiniCPM-V-2_6`) through its remote code and
    `model.chat`. It runs code from the model repository, so it needs `trust_remote_code=True`
    and a pinned `revision` (a commit hash you have reviewed). Its remote code targets the
    transformers 4.4x series (the model card names transformers 4.40); in this project's
    environment prefer serving it with vLLM and the `openai` backend.
    """

    name = "transformers"
    KINDS = ("image-text-to-text", "minicpm-v")

    def __init__(self, model: str, kind: str = "image-text-to-text", revision: str | None = None,
                 trust_remote_code: bool = False, device: str | None = None, dtype=None,
                 batch_size: int = 4, max_new_tokens: int = 256):
        import torch

        self.kind = check_choice("transformers backend kind", kind, self.KINDS)
        self.model, self.revision = model, revision
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "minicpm-v":
            if not trust_remote_code or not revision:
                raise ValueError("MiniCPM-V runs the model repository's own code: pass "
                                 "trust_remote_code=True and revision='<commit hash>' to opt in")
            from transformers import AutoModel, AutoTokenizer

            self.net = AutoModel.from_pretrained(model, trust_remote_code=True, revision=revision,
                                                 dtype=dtype or torch.bfloat16).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True, revision=revision)
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.net = AutoModelForImageTextToText.from_pretrained(
                model, revision=revision, dtype=dtype or torch.float32).to(self.device).eval()
            self.processor = AutoProcessor.from_pretrained(model, revision=revision)
            if getattr(self.processor, "tokenizer", None) is not None:
                self.processor.tokenizer.padding_side = "left"   # batched generation

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "kind": self.kind, "revision": self.revision}

    @staticmethod
    def _messages(req: ChatRequest) -> list[dict]:
        msgs = [{"role": "system", "content": [{"type": "text", "text": req.system}]}] if req.system else []
        for i, (user, assistant) in enumerate(req.history + [(req.prompt, None)]):
            content = ([{"type": "image"}] if i == 0 and req.image else []) + [{"type": "text", "text": user}]
            msgs.append({"role": "user", "content": content})
            if assistant is not None:
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
        return msgs

    def generate(self, requests: Sequence[ChatRequest]) -> list[str | BackendError]:
        import torch
        from PIL import Image

        out: list[str | BackendError] = []
        if self.kind == "minicpm-v":
            for req in requests:
                msgs = []
                for i, (user, assistant) in enumerate(req.history + [(req.prompt, None)]):
                    content = ([Image.open(req.image).convert("RGB")] if i == 0 and req.image else []) + [user]
                    msgs.append({"role": "user", "content": content})
                    if assistant is not None:
                        msgs.append({"role": "assistant", "content": [assistant]})
                try:
                    out.append(self.net.chat(image=None, msgs=msgs, tokenizer=self.tokenizer,
                                             system_prompt=req.system or None, sampling=False,
                                             max_new_tokens=self.max_new_tokens))
                except Exception as e:  # one bad image must not stop a long run
                    out.append(BackendError(f"{type(e).__name__}: {e}"))
            return out
        answers: dict[int, str] = {}
        # Requests with and without an image go in separate batches (processors want one kind).
        for group in ([i for i, r in enumerate(requests) if r.image],
                      [i for i, r in enumerate(requests) if not r.image]):
            for b in range(0, len(group), self.batch_size):
                idx = group[b:b + self.batch_size]
                batch = [requests[i] for i in idx]
                texts = [self.processor.apply_chat_template(self._messages(r), add_generation_prompt=True,
                                                            tokenize=False) for r in batch]
                kwargs = {}
                if batch[0].image:
                    kwargs["images"] = [[Image.open(r.image).convert("RGB")] for r in batch]
                inputs = self.processor(text=texts, padding=True, return_tensors="pt", **kwargs).to(self.device)
                with torch.no_grad():
                    gen = self.net.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
                new = gen[:, inputs["input_ids"].shape[1]:]
                answers.update(zip(idx, self.processor.batch_decode(new, skip_special_tokens=True)))
        return [answers[i] for i in range(len(requests))]


# ----------------------------------------------------------------------------- 3. simulated

@dataclass(frozen=True)
class SimulatedErrors:
    """Per-answer probabilities of the errors a real MLLM makes."""
    wrong_attribute: float = 0.0   # one object's colour, shape or size is misread
    omit_object: float = 0.0       # an object of a multi-object scene is left out
    invent_object: float = 0.0     # an object that is not there is described
    vague: float = 0.0             # sizes and positions are left out
    malformed_json: float = 0.0    # the answer breaks the JSON contract

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SimulatedErrors.{k} must be a probability in [0, 1], got {v}")

    def scaled(self, factor: float) -> "SimulatedErrors":
        return SimulatedErrors(**{k: min(1.0, v * factor) for k, v in asdict(self).items()})


# A plausible error profile for a capable open MLLM on simple synthetic scenes (our assumption).
REALISTIC = SimulatedErrors(wrong_attribute=0.05, omit_object=0.04, invent_object=0.03, vague=0.05,
                            malformed_json=0.03)
_COMPLETE_HINT = "give its size, colour, shape and position"
_FAITHFUL_HINT = "do not mention objects that are not in the image"
_QUOTED = re.compile(r'"([^"]+)"')


class SimulatedMLLM(MLLMBackend):
    """The toy world's MLLM. It sees an image as its ground-truth scene (looked up by path, or by
    the file's bytes when the image arrives over HTTP) and answers the prompt's JSON contract.

    How prompts matter (our model of a real MLLM, stated so that it can be questioned): without an
    instruction to give every attribute, answers are vague half of the time; without an
    instruction to be faithful, omissions and inventions are twice as likely. The modification in
    a target-text prompt is read from its words (`toylang.interpret`), never from ground truth.
    """

    name = "simulated"

    def __init__(self, world_root: str | os.PathLike, errors: SimulatedErrors = SimulatedErrors(),
                 seed: int = 0, repair_success: float = 0.8):
        from .world import load_ground_truth

        self.gt = load_ground_truth(world_root)
        self.errors, self.seed, self.repair_success = errors, seed, repair_success
        self.model = f"simulated-mllm(seed={seed}, errors={asdict(errors)})"
        self._by_hash: dict[str, tw.Scene] | None = None

    def describe(self) -> dict:
        return {"backend": self.name, "model": "simulated-mllm", "errors": asdict(self.errors),
                "seed": self.seed}

    # -- perception ------------------------------------------------------------------------
    def scene_of_path(self, path: str | os.PathLike) -> tw.Scene:
        return self.gt.scene(Path(path).resolve())

    def scene_of_bytes(self, data: bytes) -> tw.Scene:
        if self._by_hash is None:
            self._by_hash = {hashlib.sha256((self.gt.root / p).read_bytes()).hexdigest(): self.gt.scene(p)
                             for p in self.gt.paths()}
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._by_hash:
            raise KeyError("this image is not part of the toy world")
        return self._by_hash[digest]

    # -- answering -------------------------------------------------------------------------
    def _rng(self, req: ChatRequest, scene: tw.Scene | None) -> random.Random:
        # Keyed by what the model sees (scene, prompt, turn), so that an answer is the same whether
        # the image came as a path or over HTTP, and a resumed run gets the same answers.
        return random.Random(f"{self.seed}/{scene.key if scene else ''}/{req.prompt}/{len(req.history)}")

    def answer(self, req: ChatRequest, scene: tw.Scene | None) -> str:
        rng = self._rng(req, scene)
        first_prompt = req.history[0][0] if req.history else req.prompt
        fields = requested_fields(req.prompt) or requested_fields(first_prompt)
        if scene is None:
            return json.dumps({f: "I cannot see an image." for f in fields})
        lower = first_prompt.lower()
        errors = self.errors
        vague = errors.vague if _COMPLETE_HINT in lower else max(errors.vague, 0.5)
        unfaithful = 1.0 if _FAITHFUL_HINT in lower else 2.0
        values = {}
        for f in fields:
            if f == "caption":
                values[f] = self._describe(scene, rng, vague, unfaithful)
            elif f == "modification":
                mod = tw.sample_modification(scene, rng)
                values[f] = tw.describe_modification(scene, mod, rng)
            elif f == "target":
                values[f] = self._describe(self._after(scene, first_prompt), rng, vague, unfaithful)
            else:
                values[f] = "unknown"
        text = json.dumps(values)
        p_bad = (1 - self.repair_success) if req.history else errors.malformed_json
        if rng.random() < p_bad:
            return rng.choice([f"Sure! Here is the answer: {text[:-2]}",     # truncated
                               text.replace('": "', '": ', 1),               # broken quoting
                               "Here is a description of the image: " + next(iter(values.values()))])
        return text

    def _after(self, scene: tw.Scene, prompt: str) -> tw.Scene:
        """The scene after the modification quoted in the prompt, as its words say."""
        quoted = _QUOTED.findall(prompt.split("Answer with")[0])
        if not quoted:
            return scene
        # Not understood: describe the reference unchanged (a failure real MLLMs show too).
        return tl.apply_text(scene, quoted[0]) or scene

    def _describe(self, scene: tw.Scene, rng: random.Random, vague: float, unfaithful: float) -> str:
        e = self.errors
        objs = list(scene.objects)
        if rng.random() < e.wrong_attribute:
            i = rng.randrange(len(objs))
            o = objs[i]
            which = rng.choice(("color", "shape", "size"))
            pool = {"color": list(tw.COLORS), "shape": list(tw.SHAPES), "size": list(tw.SIZES)}[which]
            objs[i] = tw.Obj(o.pos, **{**{"shape": o.shape, "color": o.color, "size": o.size},
                                       which: rng.choice([v for v in pool if v != getattr(o, which)])})
        if len(objs) > 1 and rng.random() < min(1.0, e.omit_object * unfaithful):
            objs.pop(rng.randrange(len(objs)))
        free = [c for c in range(9) if c not in {o.pos for o in objs}]
        if free and rng.random() < min(1.0, e.invent_object * unfaithful):
            objs.append(tw.Obj(rng.choice(free), rng.choice(tw.SHAPES), rng.choice(list(tw.COLORS)),
                               rng.choice(tw.SIZES)))
        if rng.random() < vague:
            mentions = [tl.Mention(o.shape, o.color) for o in objs]
            return tl.describe_scene_mentions(mentions, scene.background if rng.random() < 0.5 else None)
        return tw.describe(sorted(objs), scene.background, rng)

    def generate(self, requests: Sequence[ChatRequest]) -> list[str | BackendError]:
        out = []
        for req in requests:
            try:
                scene = self.scene_of_path(req.image) if req.image else None
            except KeyError as e:
                out.append(BackendError(str(e)))
                continue
            out.append(self.answer(req, scene))
        return out


def make_backend(kind: str, **kwargs) -> MLLMBackend:
    """Build a backend by name: simulated(world_root, errors, seed), openai(base_url, model, ...),
    transformers(model, kind, revision, trust_remote_code, ...)."""
    kind = check_choice("MLLM backend", kind, BACKENDS)
    if kind == "simulated":
        return SimulatedMLLM(**kwargs)
    if kind == "openai":
        return OpenAIBackend(**kwargs)
    return TransformersBackend(**kwargs)
