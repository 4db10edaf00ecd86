"""Fine-tune a VLM on a synthetic store from the command line (the paper profile's step 2).

    python -m mvft_helpers.finetune --vlm Salesforce/blip2-itm-vit-g \
        --store work/paper/synthetic/store.jsonl --work-dir work/paper --name vlm \
        --steps 8000 --batch-size 128 --lr 1e-5

The paper's own encoder (ViT-L/14) through LAVIS, in the LAVIS environment (`make lavis-env`):

    .venv-lavis/bin/python -m mvft_helpers.finetune --backend lavis --vlm pretrain_vitL \
        --store work/paper/synthetic/store.jsonl --work-dir work/paper --name vlm --steps 8000

On several GPUs: `accelerate launch -m mvft_helpers.finetune ...` (the loop is `accelerate`-ready;
the batch is split across processes). The run resumes from `<work-dir>/models/<name>.pt`.
`--vlm toy --world DIR` fine-tunes the toy model instead (what notebook 03 does).
"""
from __future__ import annotations

import argparse
import json
import sys

from .retrieval import SIMILARITIES
from .training import TrainConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", required=True, help="blip2: hub id or local folder of a BLIP-2 retrieval model; "
                    "lavis: pretrain_vitL, pretrain or a BLIP-2 .pth file; or 'toy'")
    ap.add_argument("--backend", choices=("blip2", "lavis"), default="blip2",
                    help="the library the model comes through (lavis: run in .venv-lavis)")
    ap.add_argument("--store", help="synthetic store (default: <work-dir>/synthetic/store.jsonl)")
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--world", help="toy world root (only with --vlm toy)")
    ap.add_argument("--name", default="vlm")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--decay-every-epochs", type=int, default=10)
    ap.add_argument("--similarity", choices=SIMILARITIES, default="meanmax")
    ap.add_argument("--weight-t", type=float, default=1.0)
    ap.add_argument("--weight-c", type=float, default=1.0)
    ap.add_argument("--pretrain-steps", type=int, default=300, help="toy only: stage-1 steps")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from . import pipeline

    try:
        cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, grad_accum=a.grad_accum,
                          decay_every_epochs=a.decay_every_epochs, similarity=a.similarity,
                          weight_t=a.weight_t, weight_c=a.weight_c, seed=a.seed)
        if a.vlm == "toy":
            if not a.world:
                raise ValueError("--vlm toy needs --world")
            backend = None
        else:
            backend = pipeline.make_vlm(a.backend, a.vlm, pipeline.default_device())
        _, history = pipeline.finetune(a.world, a.work_dir, a.name, cfg, a.pretrain_steps, a.store,
                                       backend=backend)
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(pipeline.Work(a.work_dir).model(a.name)),
                      "steps": history["step"][-1] if history["step"] else 0,
                      "final_loss": history["loss"][-1] if history["loss"] else None,
                      "seconds": round(history["seconds"], 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
