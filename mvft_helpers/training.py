"""Q-Former training with the two InfoNCE losses of MVFT-JI (and the stage-1 stand-in).

    L = weight_t * L_t + weight_c * L_c
    L_t: the composed query (image x, modification m) retrieves its target text t among the batch;
    L_c: the caption c retrieves its image x among the batch (and back).

Both are symmetric InfoNCE with in-batch negatives and one learnable temperature. The similarity
is an option: `meanmax` (token level: each query-side token's best match, averaged) or `max`
(BLIP-2: the best query token). The image encoder is frozen and never runs here: training reads
cached frozen features. Pretraining of the toy model (BLIP-2's stage 1 stand-in) is the same loop
with L_t switched off, on image-caption pairs, never on composed triplets.

The loop runs under `accelerate` (one CPU, one GPU or several), accumulates gradients, writes
checkpoints atomically and resumes from the last one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import check_choice
from .io import atomic_write_bytes
from .retrieval import SIMILARITIES, all_scores, pairwise_scores


def info_nce(sim: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a (B, B) similarity matrix whose diagonal holds the positives."""
    logits = sim * logit_scale.exp().clamp(max=100.0)
    labels = torch.arange(len(sim), device=sim.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class ContrastiveObjective(nn.Module):
    """Wraps the VLM so that one forward call computes both losses (what DDP needs)."""

    def __init__(self, backend, weight_t: float = 1.0, weight_c: float = 1.0,
                 similarity: str = "meanmax", init_temperature: float = 0.07):
        super().__init__()
        if weight_t < 0 or weight_c < 0 or weight_t + weight_c == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got L_t {weight_t}, L_c {weight_c}")
        self.backend = backend
        self.weight_t, self.weight_c = weight_t, weight_c
        self.similarity = check_choice("similarity", similarity, SIMILARITIES)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def similarities(self, vision, captions=None, modifications=None, targets=None) -> dict:
        out = {}
        if self.weight_c and captions is not None:
            img = self.backend.image_tokens(vision)
            cap = self.backend.text_features(captions)
            out["c"] = pairwise_scores(cap, img, self.similarity)          # caption -> image
        if self.weight_t and modifications is not None:
            comp = self.backend.composed_tokens(vision, modifications)
            tgt = self.backend.text_features(targets)
            out["t"] = pairwise_scores(comp, tgt, self.similarity)         # query -> target text
        return out

    def forward(self, vision, captions=None, modifications=None, targets=None) -> dict:
        sims = self.similarities(vision, captions, modifications, targets)
        losses = {f"L_{k}": info_nce(s, self.logit_scale) for k, s in sims.items()}
        total = self.weight_c * losses.get("L_c", 0.0) + self.weight_t * losses.get("L_t", 0.0)
        return {"loss": total, **losses}


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 64              # the paper: 128
    lr: float = 1e-4                  # the paper: 1e-5 (a large pretrained Q-Former)
    weight_decay: float = 0.05
    warmup_steps: int = 20
    decay_every_epochs: int = 10      # the paper decays the lr every 10 epochs
    decay_gamma: float = 0.5
    grad_accum: int = 1
    clip_norm: float = 1.0
    weight_t: float = 1.0
    weight_c: float = 1.0
    similarity: str = "meanmax"
    seed: int = 0
    checkpoint_every: int = 50
    eval_every_epochs: int = 1

    def __post_init__(self):
        check_choice("similarity", self.similarity, SIMILARITIES)
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class TrainData:
    """What the loop trains on: cached frozen features plus texts, aligned by row."""
    vision: torch.Tensor                  # (N, patches, Dv)
    captions: list[str]
    modifications: list[str] | None = None
    targets: list[str] | None = None

    def __len__(self) -> int:
        return len(self.vision)

    def batch(self, rows: torch.Tensor) -> dict:
        r = rows.tolist()
        out = {"vision": self.vision[rows], "captions": [self.captions[i] for i in r]}
        if self.modifications is not None:
            out["modifications"] = [self.modifications[i] for i in r]
            out["targets"] = [self.targets[i] for i in r]
        return out


def _lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    epoch = step // steps_per_epoch
    return warm * cfg.decay_gamma ** (epoch // cfg.decay_every_epochs)


def _epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def _trainable_state(objective: ContrastiveObjective) -> dict:
    """Only what training changes; frozen weights (image encoder, word embeddings) are rebuilt
    from their source when a checkpoint is loaded."""
    return {k: p.detach().clone() for k, p in objective.named_parameters() if p.requires_grad}


def _load_trainable(objective: ContrastiveObjective, state: dict, where) -> None:
    want = {k for k, p in objective.named_parameters() if p.requires_grad}
    missing, unexpected = want - set(state), set(state) - want
    if missing or unexpected:
        raise ValueError(f"{where} does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    objective.load_state_dict(state, strict=False)


def backend_spec(backend) -> dict | None:
    """What rebuilds `backend` from a checkpoint alone: {"kind": "toy" | "lavis", "config": {...}};
    None for backends loaded from a hub id or folder (pass them to `load_trained`)."""
    from .lavis_backend import LavisSpec   # LAVIS itself is imported only when a model is built

    if hasattr(backend, "toy_config"):
        return {"kind": "toy", "config": asdict(backend.toy_config)}
    if isinstance(getattr(backend, "spec", None), LavisSpec):
        return {"kind": "lavis", "config": asdict(backend.spec)}
    return None


def _plain(obj):
    """Python numbers, strings, lists and dicts only (no NumPy scalars): checkpoints load with
    `weights_only=True` in either environment, whatever NumPy each one has."""
    return json.loads(json.dumps(obj, default=float))


def save_training_state(path: Path, objective, optimizer, step: int, history: dict, cfg: TrainConfig,
                        extra: dict | None = None) -> None:
    import io

    buf = io.BytesIO()
    spec = backend_spec(objective.backend)
    torch.save({"objective": _trainable_state(objective), "optimizer": optimizer.state_dict(),
                "step": step, "history": _plain(history), "config": asdict(cfg), "extra": _plain(extra or {}),
                "rng": torch.get_rng_state(),   # dropout masks continue as if never interrupted
                "backend": objective.backend.name, "backend_spec": spec,
                "toy_config": spec["config"] if spec and spec["kind"] == "toy" else None}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """A checkpoint written by `train` (tensors and plain Python values only, so it loads with
    `weights_only=True` in the main and the LAVIS environment alike)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:   # written before histories were made plain; our own file
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def train(objective: ContrastiveObjective, data: TrainData, cfg: TrainConfig,
          checkpoint: str | os.PathLike | None = None,
          eval_fn: Callable[[object], dict] | None = None, progress: bool = True,
          desc: str = "training", extra: dict | None = None) -> dict:
    """Train `objective` on `data`; resume from `checkpoint` if it holds a run of the same config.

    Returns the history: per-step losses and per-epoch evaluations (from `eval_fn(backend)`).
    """
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=not torch.cuda.is_available())
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = {"step": [], "loss": [], "L_t": [], "L_c": [], "lr": [], "eval": [], "seconds": 0.0}
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.exists():
        state = read_checkpoint(ckpt)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{ckpt} holds a run with another TrainConfig; delete it or use another "
                             f"path (differs in: {[k for k, v in asdict(cfg).items() if state['config'].get(k) != v]})")
        _load_trainable(objective, state["objective"], ckpt)
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        if "rng" in state:
            torch.set_rng_state(state["rng"])
    model, optimizer = acc.prepare(objective, optimizer)
    micro = cfg.batch_size // (cfg.grad_accum * acc.num_processes)
    if micro < 2:
        raise ValueError(f"batch_size {cfg.batch_size} over {cfg.grad_accum} accumulation steps and "
                         f"{acc.num_processes} processes leaves {micro} per micro-batch; InfoNCE needs >= 2")
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, unit="step",
               disable=not progress or not acc.is_main_process)
    t0 = time.time()
    model.train()
    for step in range(start, cfg.steps):
        epoch, pos = divmod(step, steps_per_epoch)
        order = _epoch_order(len(data), epoch, cfg.seed)
        global_rows = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg, steps_per_epoch)
        logs = {}
        for a in range(cfg.grad_accum):
            rows = global_rows[(a * acc.num_processes + acc.process_index) * micro:][:micro]
            with acc.accumulate(model):
                out = model(**{k: (v.to(acc.device) if torch.is_tensor(v) else v)
                               for k, v in data.batch(rows).items()})
                acc.backward(out["loss"])
                if acc.sync_gradients and cfg.clip_norm:
                    acc.clip_grad_norm_(params, cfg.clip_norm)
                optimizer.step()
                optimizer.zero_grad()
            for k, v in out.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
        history["step"].append(step + 1)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        for k in ("loss", "L_t", "L_c"):
            history[k].append(logs.get(k, float("nan")))
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == cfg.steps
        if eval_fn and end_of_epoch and ((epoch + 1) % cfg.eval_every_epochs == 0 or step + 1 == cfg.steps):
            model.eval()
            with torch.no_grad():
                history["eval"].append({"step": step + 1, "epoch": (step + 1) / steps_per_epoch,
                                        **eval_fn(acc.unwrap_model(model).backend)})
            model.train()
        if ckpt and acc.is_main_process and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            history["seconds"] += time.time() - t0
            t0 = time.time()
            save_training_state(ckpt, acc.unwrap_model(model), optimizer, step + 1, history, cfg, extra)
    bar.close()
    history["seconds"] += time.time() - t0
    model.eval()
    return history


def load_trained(checkpoint: str | os.PathLike, backend=None):
    """(backend, history, extra) from a checkpoint written by `train`."""
    from .models import ToyConfig, toy_backend

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}; train one first (notebook 03)")
    state = read_checkpoint(ckpt)
    if backend is None:
        spec = state.get("backend_spec") or ({"kind": "toy", "config": state["toy_config"]}
                                             if state.get("toy_config") else None)
        if spec is None:
            raise ValueError(f"{ckpt} is a {state['backend']} checkpoint: build that backend and pass it")
        if spec["kind"] == "lavis":
            from .lavis_backend import LavisSpec, load_lavis_blip2

            backend = load_lavis_blip2(LavisSpec(**spec["config"]))
        else:
            backend = toy_backend(ToyConfig(**spec["config"]))
    cfg = state["config"]
    objective = ContrastiveObjective(backend, weight_t=cfg["weight_t"], weight_c=cfg["weight_c"],
                                     similarity=cfg["similarity"])
    _load_trainable(objective, state["objective"], ckpt)
    backend.eval()
    return backend, state["history"], state.get("extra", {})


def is_complete(checkpoint: str | os.PathLike, cfg: TrainConfig) -> bool:
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        return False
    # mmap: only the small config and step are read here; `load_trained` reads the tensors
    state = read_checkpoint(ckpt, mmap=True)
    return state["config"] == asdict(cfg) and state["step"] >= cfg.steps


# ----------------------------------------------------------------------------- toy stage 1

PRETRAIN = TrainConfig(steps=900, batch_size=64, lr=1e-4, warmup_steps=50, weight_t=0.0,
                       weight_c=1.0, similarity="max", checkpoint_every=100, decay_every_epochs=1000)


def pretrain_toy_blip2(world_root: str | os.PathLike, work_dir: str | os.PathLike,
                       cfg: TrainConfig = PRETRAIN, toy_config=None, held_out: int = 300,
                       progress: bool = True):
    """The toy model after its stage-1 stand-in: image-text contrastive training on the world's
    pretraining pairs (never on composed triplets), cached in `work_dir/models/`.

    Returns (backend, history); history["eval"] holds text-to-image R@1/R@5 on `held_out` pairs.
    """
    from .inference import image_tokens, text_features, vision_features
    from .io import read_jsonl
    from .models import ToyConfig, toy_backend

    world_root, work_dir = Path(world_root), Path(work_dir)
    toy_config = toy_config or ToyConfig(seed=cfg.seed)
    ckpt = work_dir / "models" / f"toy-blip2-pretrained-{_digest(cfg, toy_config, world_root)}.pt"
    if is_complete(ckpt, cfg):
        backend, history, _ = load_trained(ckpt)
        return backend, history, ckpt
    backend = toy_backend(toy_config)
    pairs = read_jsonl(world_root / "pretrain" / "captions.jsonl")
    paths = [world_root / "pretrain" / p["image"] for p in pairs]
    vision = vision_features(backend, paths, work_dir / "features", "pretrain", progress=progress)
    n_train = len(pairs) - held_out
    data = TrainData(vision[:n_train], [p["caption"] for p in pairs[:n_train]])
    eval_vision, eval_caps = vision[n_train:], [p["caption"] for p in pairs[n_train:]]

    def evaluate(b):
        s = all_scores(text_features(b, eval_caps), image_tokens(b, eval_vision), "meanmax")
        rank = (s > s.diagonal()[:, None]).sum(dim=1)
        return {"t2i_R@1": 100.0 * float((rank < 1).float().mean()),
                "t2i_R@5": 100.0 * float((rank < 5).float().mean())}

    objective = ContrastiveObjective(backend, cfg.weight_t, cfg.weight_c, cfg.similarity)
    cfg_eval = TrainConfig(**{**asdict(cfg), "eval_every_epochs": max(1, cfg.eval_every_epochs)})
    history = train(objective, data, cfg_eval, ckpt, eval_fn=evaluate, progress=progress,
                    desc="stage-1 pretraining (image-caption pairs)")
    return backend, history, ckpt


def _digest(*parts) -> str:
    import hashlib

    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else str(p) for p in parts],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
