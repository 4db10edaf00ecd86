"""Command line for long synthesis runs (the same function notebook 01 calls).

    python -m mvft_helpers.synthesize --images DIR --backend simulated --world WORLD --out FILE
    python -m mvft_helpers.synthesize --images DIR --backend openai --base-url URL --model NAME \
        --out FILE [--api-key-env OPENAI_API_KEY] [--concurrency 16] [--stop "<|im_end|>"]
    python -m mvft_helpers.synthesize --images DIR --backend transformers --model PATH --out FILE

Stop it at any time (Ctrl-C or kill -9) and run the same command again: it continues where it
stopped. The API key is read from the environment variable named by --api-key-env, never from
the command line.
"""
from __future__ import annotations

import argparse
import json
import sys

from .mllm import BACKENDS, REALISTIC, SimulatedErrors, make_backend
from .prompts import DEFAULTS, PROMPTS
from .synthesis import PromptSet, list_images, synthesize


def build_backend(a) -> object:
    if a.backend == "simulated":
        if not a.world:
            raise ValueError("--backend simulated needs --world (the toy world root it reads)")
        errors = REALISTIC.scaled(a.error_scale) if a.errors == "realistic" else SimulatedErrors()
        return make_backend("simulated", world_root=a.world, errors=errors, seed=a.seed)
    if not a.model:
        raise ValueError(f"--backend {a.backend} needs --model")
    if a.backend == "openai":
        if not a.base_url:
            raise ValueError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        return make_backend("openai", base_url=a.base_url, model=a.model, api_key_env=a.api_key_env,
                            concurrency=a.concurrency, timeout=a.timeout, retries=a.retries,
                            stop=a.stop or None)
    return make_backend("transformers", model=a.model, kind=a.kind, revision=a.revision,
                        trust_remote_code=a.trust_remote_code, batch_size=a.batch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.synthesize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--backend", required=True, choices=BACKENDS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--chunk-size", type=int, default=64)
    for task, key in (("caption", "caption"), ("modification", "modification"), ("target", "target_text")):
        ap.add_argument(f"--prompt-{task}", default=DEFAULTS[key],
                        choices=sorted(p for p in PROMPTS if p.startswith(key + "/")))
    g = ap.add_argument_group("simulated")
    g.add_argument("--world")
    g.add_argument("--errors", choices=("none", "realistic"), default="realistic")
    g.add_argument("--error-scale", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("openai")
    g.add_argument("--base-url")
    g.add_argument("--model")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY")
    g.add_argument("--concurrency", type=int, default=16)
    g.add_argument("--timeout", type=float, default=60.0)
    g.add_argument("--retries", type=int, default=4)
    g.add_argument("--stop", action="append")
    g = ap.add_argument_group("transformers")
    g.add_argument("--kind", default="image-text-to-text", choices=("image-text-to-text", "minicpm-v"))
    g.add_argument("--revision")
    g.add_argument("--trust-remote-code", action="store_true")
    g.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args(argv)
    try:
        backend = build_backend(a)
        images = list_images(a.images)
        prompts = PromptSet(a.prompt_caption, a.prompt_modification, a.prompt_target)
        summary = synthesize(images, backend, a.out, prompts, chunk_size=a.chunk_size, limit=a.limit,
                             image_root=a.images)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
