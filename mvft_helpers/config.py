"""Profiles and presets: the few names a notebook's `parameters` cell chooses between.

- profile `toy`: the generated shapes world, tiny BLIP-2 built from config, simulated MLLM; runs
  offline on a CPU.
- profile `paper`: real BLIP-2 weights, MiniCPM-V-2.6 (local or served), the real FashionIQ, CIRR
  and CIRCO folders; needs a GPU and the weights on disk.
- preset `demo` (the sizes `make demo` uses) or `ci` (small sizes for `make test`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, TypeVar

from .world import WorldConfig

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
TOY_BENCHMARKS = ("toy-cirr", "toy-circo", "toy-fashioniq")
REAL_BENCHMARKS = ("cirr", "circo", "fashioniq")


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """Return `value` if it is one of `allowed`, else raise a ValueError that lists them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed values: {', '.join(map(repr, allowed))}")
    return value


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    benchmarks: tuple[str, ...]
    needs_gpu: bool


PROFILES = {
    "toy": Profile("toy", "generated shapes world, tiny BLIP-2 from config, simulated MLLM; "
                   "offline on a CPU", TOY_BENCHMARKS, needs_gpu=False),
    "paper": Profile("paper", "BLIP-2 weights, MiniCPM-V-2.6, the real FashionIQ / CIRR / CIRCO "
                     "folders; a GPU and local weights", REAL_BENCHMARKS, needs_gpu=True),
}

PRESETS = {
    "demo": WorldConfig(),
    "ci": WorldConfig(n_pool=800, n_pretrain=1500, cirr_val_sets=40, cirr_test_sets=10,
                      circo_val_queries=40, circo_test_queries=10, circo_distractors=200,
                      fiq_val_queries=40, fiq_test_queries=10),
}


def get_profile(name: str) -> Profile:
    return PROFILES[check_choice("profile", name, PROFILES)]


def world_config(preset: str = "demo", seed: int = 0) -> WorldConfig:
    return replace(PRESETS[check_choice("preset", preset, PRESETS)], seed=int(seed))


def world_dir(data_dir: str | os.PathLike, preset: str = "demo", seed: int = 0) -> Path:
    """Where the toy world of a preset and seed lives under `data_dir`."""
    check_choice("preset", preset, PRESETS)
    return Path(data_dir) / f"toy-{preset}-seed{int(seed)}"


# Training sizes of each preset (steps of batch 64 on the 2-core CPU: ~0.5 s a pretraining step,
# ~0.9 s a fine-tuning step with both losses).
TRAINING = {
    "demo": {"pretrain_steps": 300, "finetune_steps": 200, "ablation_steps": 200, "overfit_steps": 60},
    "ci": {"pretrain_steps": 150, "finetune_steps": 100, "ablation_steps": 100, "overfit_steps": 60},
}


def training_sizes(preset: str = "demo") -> dict:
    return dict(TRAINING[check_choice("preset", preset, TRAINING)])
