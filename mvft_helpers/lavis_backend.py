"""BLIP-2 through salesforce-lavis: the paper's ViT-L/14 model (`blip2_feature_extractor`,
`pretrain_vitL`) behind the project's `VLMBackend` interface.

Runs in the LAVIS environment only (`.venv-lavis`, `make lavis-env`): salesforce-lavis 1.0.2 pins
transformers<4.27, which cannot share the main environment. Everything else in the project (data,
metrics, retrieval, the synthetic store, training) imports in both; files are the contract between
them (feature caches, checkpoints, stores).

What this module changes in LAVIS and why: LAVIS builds the Q-Former from the hub's
`bert-base-uncased` (config, vocabulary and BERT weights) and the image encoder from a file it
downloads at construction. `LavisSpec` builds the same `Blip2Qformer` class offline instead: the
Q-Former from `assets/bert-base-uncased/config.json` and the bert-base-uncased vocabulary that MiniLM
ships (BERT's weights are never needed: a BLIP-2 checkpoint holds every Q-Former weight), and the
image encoder from LAVIS's weight cache, with an error that says how to fill it when a file is
missing. `model_type="random"` gives a randomly initialised model (tests; nothing to download).

    python -m mvft_helpers.lavis_backend check      # versions and which weight files are present
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .config import REPO_ROOT, check_choice
from .models import VLMBackend

_BASE_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
# LAVIS's BLIP-2 stage-1 checkpoints (its model zoo names) and the image encoder each one sits on.
MODEL_TYPES = {
    "pretrain_vitL": {"checkpoint": _BASE_URL + "blip2_pretrained_vitL.pth", "vit": "clip_L"},
    "pretrain": {"checkpoint": _BASE_URL + "blip2_pretrained.pth", "vit": "eva_clip_g"},
    "random": {"checkpoint": None, "vit": "clip_L"},
}
VIT_WEIGHTS = {"clip_L": _BASE_URL + "clip_vit_L.pth", "eva_clip_g": _BASE_URL + "eva_vit_g.pth"}
VIT_WIDTH = {"clip_L": 1024, "eva_clip_g": 1408}
BERT_CONFIG = REPO_ROOT / "assets" / "bert-base-uncased" / "config.json"
# LAVIS's image preprocessing for evaluation (blip_image_eval): OpenAI CLIP's statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def require_lavis():
    """Import LAVIS, or say how to get the environment it lives in."""
    try:
        import lavis  # noqa: F401  (registers LAVIS's models and processors)
    except ImportError as e:
        raise ImportError(
            f"the LAVIS backend needs salesforce-lavis, which lives in its own environment "
            f"(it pins transformers<4.27): run `make lavis-env`, then use .venv-lavis/bin/python "
            f"(or the 'MVFT-JI LAVIS' kernel from `make lab-lavis`). This Python: {sys.executable} "
            f"({type(e).__name__}: {e})") from e
    return lavis


def weight_cache_dir() -> Path:
    """Where LAVIS looks for (and downloads) its weight files: torch hub's checkpoints folder
    (`$TORCH_HOME/hub/checkpoints`, by default ~/.cache/torch/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_path(url: str) -> Path:
    """Where LAVIS keeps (or would download) the weight file at `url`."""
    return weight_cache_dir() / os.path.basename(url)


def cached_weight(url: str, what: str) -> Path:
    """The local copy of a LAVIS weight file, or an error that says where to put it."""
    path = weight_path(url)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: {path} does not exist. LAVIS downloads it from {url} at first use; "
            f"offline, download it on a machine with internet (e.g. `wget {url}`) and copy it to "
            f"{path.parent}/ (or set TORCH_HOME so that <TORCH_HOME>/hub/checkpoints holds it).")
    return path


def bert_vocab() -> Path:
    """bert-base-uncased's vocabulary, as the MiniLM package ships it."""
    from .models import minilm_path

    return Path(minilm_path()) / "vocab.txt"


@dataclass(frozen=True)
class LavisSpec:
    """What builds a LAVIS BLIP-2 (stored in checkpoints, so a fine-tuned run can be rebuilt).

    model_type: `pretrain_vitL` (the paper: ViT-L/14), `pretrain` (ViT-g) or `random`.
    vision_layers / qformer_layers: shrink the random model (tests); None keeps LAVIS's sizes.
    checkpoint: a local BLIP-2 checkpoint file instead of LAVIS's cached download.
    """
    model_type: str = "pretrain_vitL"
    image_size: int = 224
    num_query_token: int = 32
    cross_attention_freq: int = 2
    embed_dim: int = 256
    max_txt_len: int = 64          # LAVIS: 32; the MLLM's target texts are longer than captions
    vision_layers: int | None = None
    qformer_layers: int | None = None
    checkpoint: str | None = None
    seed: int = 0

    def __post_init__(self):
        check_choice("LAVIS model type", self.model_type, MODEL_TYPES)
        if self.model_type != "random" and (self.vision_layers or self.qformer_layers):
            raise ValueError("vision_layers / qformer_layers shrink the random model only; the "
                             f"pretrained {self.model_type!r} has LAVIS's own sizes")

    @property
    def vit(self) -> str:
        return MODEL_TYPES[self.model_type]["vit"]


def _blip2_class(spec: LavisSpec):
    """LAVIS's `Blip2Qformer` with its three hub-reading constructors replaced by offline ones."""
    require_lavis()
    from lavis.models.blip2_models.blip2 import LayerNorm
    from lavis.models.blip2_models.blip2_qformer import Blip2Qformer
    from lavis.models.blip2_models.Qformer import BertConfig, BertLMHeadModel
    from transformers import BertTokenizer

    class OfflineBlip2Qformer(Blip2Qformer):
        @classmethod
        def init_tokenizer(cls, truncation_side="right"):
            tok = BertTokenizer(str(bert_vocab()), do_lower_case=True, model_max_length=512,
                                truncation_side=truncation_side)
            tok.add_special_tokens({"bos_token": "[DEC]"})   # as LAVIS adds it
            return tok

        @classmethod
        def init_Qformer(cls, num_query_token, vision_width, cross_attention_freq=2):
            config = BertConfig.from_json_file(str(BERT_CONFIG))
            if spec.qformer_layers:
                config.num_hidden_layers = spec.qformer_layers
            config.encoder_width = vision_width
            config.add_cross_attention = True
            config.cross_attention_freq = cross_attention_freq
            config.query_length = num_query_token
            qformer = BertLMHeadModel(config)      # random; a BLIP-2 checkpoint overwrites all of it
            query_tokens = torch.nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
            query_tokens.data.normal_(mean=0.0, std=config.initializer_range)
            return qformer, query_tokens

        @classmethod
        def init_vision_encoder(cls, model_name, img_size, drop_path_rate, use_grad_checkpoint, precision):
            if spec.model_type != "random":   # load_lavis_blip2 checked that the weight file is there
                return super().init_vision_encoder(model_name, img_size, drop_path_rate,
                                                   use_grad_checkpoint, precision)
            from lavis.models.clip_vit import VisionTransformer

            # the clip_L architecture as LAVIS's create_clip_vit_L builds it (layers=22), random
            vit = VisionTransformer(input_resolution=img_size, patch_size=14, width=VIT_WIDTH["clip_L"],
                                    layers=spec.vision_layers or 22, heads=16,
                                    use_grad_checkpointing=use_grad_checkpoint)
            return vit, LayerNorm(vit.num_features)

    return OfflineBlip2Qformer


class LavisBackend(VLMBackend):
    """A LAVIS `Blip2Qformer` behind the project's interface.

    Trainable: the Q-Former's BERT (self-attention, cross-attention, both FFNs, embeddings), the
    query tokens, the two projections and the LayerNorm on the image features (LAVIS trains it with
    the Q-Former). Frozen: the image encoder (its output is cached before that LayerNorm), and the
    parts MVFT-JI's losses never use (the language-model and matching heads, LAVIS's temperature).
    """

    def __init__(self, model, spec: LavisSpec):
        super().__init__()
        self.model, self.spec = model, spec
        self.tokenizer = model.tokenizer
        # the feature caches key on the name: random models differ by their shape and seed
        self.name = f"lavis:{spec.model_type}" + (
            f"(vision_layers={spec.vision_layers},qformer_layers={spec.qformer_layers},seed={spec.seed})"
            if spec.model_type == "random" else "")
        self._processor = None
        for p in model.parameters():
            p.requires_grad_(False)
        for module in (model.Qformer.bert, model.vision_proj, model.text_proj, model.ln_vision):
            for p in module.parameters():
                p.requires_grad_(True)
        model.query_tokens.requires_grad_(True)
        self.model.visual_encoder.eval()

    @property
    def device(self) -> torch.device:
        return self.model.query_tokens.device

    @property
    def num_query_tokens(self) -> int:
        return self.model.query_tokens.shape[1]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """LAVIS's evaluation preprocessing (`blip_image_eval`): bicubic resize, CLIP statistics."""
        if self._processor is None:
            from lavis.processors.blip_processors import BlipImageEvalProcessor

            self._processor = BlipImageEvalProcessor(image_size=self.spec.image_size, mean=CLIP_MEAN, std=CLIP_STD)
        return torch.stack([self._processor(im.convert("RGB")) for im in images]).to(self.device)

    @torch.no_grad()
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen ViT's tokens (N, 257, 1024 for ViT-L/14 at 224), before `ln_vision`."""
        vit = self.model.visual_encoder       # fp16 on a GPU (LAVIS's vit_precision), fp32 on a CPU
        return vit(pixel_values.to(self.device, next(vit.parameters()).dtype)).float()

    def _vision(self, vision_feats: torch.Tensor):
        x = self.model.ln_vision(vision_feats.to(self.device, torch.float32))
        return x, torch.ones(x.shape[:2], dtype=torch.long, device=self.device)

    def _text(self, texts: Sequence[str]):
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.spec.max_txt_len,
                              return_tensors="pt").to(self.device)

    def image_tokens(self, vision_feats: torch.Tensor) -> torch.Tensor:
        m = self.model
        image, image_atts = self._vision(vision_feats)
        q = m.query_tokens.expand(image.shape[0], -1, -1)
        out = m.Qformer.bert(query_embeds=q, encoder_hidden_states=image, encoder_attention_mask=image_atts,
                             return_dict=True).last_hidden_state
        return F.normalize(m.vision_proj(out), dim=-1)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        m = self.model
        t = self._text(texts)
        out = m.Qformer.bert(t.input_ids, attention_mask=t.attention_mask, return_dict=True).last_hidden_state
        return F.normalize(m.text_proj(out[:, 0]), dim=-1).unsqueeze(1)     # the [CLS] token

    def composed_tokens(self, vision_feats: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """LAVIS's multimodal features: the query tokens and the text in one self-attention, the
        queries cross-attending to the image; the query outputs, projected like image tokens."""
        m = self.model
        image, image_atts = self._vision(vision_feats)
        t = self._text(texts)
        q = m.query_tokens.expand(image.shape[0], -1, -1)
        attn = torch.cat([torch.ones(q.shape[:2], dtype=t.attention_mask.dtype, device=self.device),
                          t.attention_mask], dim=1)
        out = m.Qformer.bert(t.input_ids, query_embeds=q, attention_mask=attn, encoder_hidden_states=image,
                             encoder_attention_mask=image_atts, return_dict=True).last_hidden_state
        return F.normalize(m.vision_proj(out[:, :q.shape[1]]), dim=-1)


def parse_model(name: str) -> LavisSpec:
    """A LAVIS model named as the notebooks' `vlm_model` and the CLI's `--vlm` name it:

    - `pretrain_vitL` (the paper) or `pretrain` (ViT-g): LAVIS's checkpoints from its weight cache;
    - a path to a BLIP-2 `.pth` file: that checkpoint on the ViT-L/14 (`pretrain_vitL`'s encoder);
    - `random` or `random:vision_layers=2,qformer_layers=2`: a randomly initialised model (tests).
    """
    kind, _, opts = name.partition(":")
    if kind == "random":
        kwargs = {}
        for item in filter(None, opts.split(",")):
            key, _, value = item.partition("=")
            if key not in ("vision_layers", "qformer_layers", "seed"):
                raise ValueError(f"unknown option {key!r} in {name!r}; allowed: vision_layers, qformer_layers, seed")
            kwargs[key] = int(value)
        return LavisSpec(model_type="random", **kwargs)
    if kind in MODEL_TYPES:
        return LavisSpec(model_type=kind)
    if name.endswith((".pth", ".pt")):
        return LavisSpec(model_type="pretrain_vitL", checkpoint=str(Path(name).expanduser().resolve()))
    raise ValueError(f"unknown LAVIS model {name!r}: use 'pretrain_vitL' (the paper's ViT-L/14), "
                     "'pretrain' (ViT-g), a BLIP-2 checkpoint file (.pth), or 'random'")


def load_lavis_blip2(spec: LavisSpec | str = "pretrain_vitL", device: str | None = None) -> LavisBackend:
    """A LAVIS BLIP-2 (`pretrain_vitL` by default) as a `LavisBackend`, built offline.

    The weights come from LAVIS's cache (`weight_cache_dir()`) or `spec.checkpoint`; a missing file
    raises FileNotFoundError naming the file, its URL and where to put it.
    """
    require_lavis()
    spec = parse_model(spec) if isinstance(spec, str) else spec
    cuda = (device or "").startswith("cuda")
    ckpt = None
    if spec.model_type != "random":   # fail on a missing file before building ~1B parameters
        ckpt = Path(spec.checkpoint) if spec.checkpoint else cached_weight(
            MODEL_TYPES[spec.model_type]["checkpoint"], f"the BLIP-2 {spec.model_type} checkpoint")
        if not ckpt.is_file():
            raise FileNotFoundError(f"BLIP-2 checkpoint {ckpt} does not exist")
        cached_weight(VIT_WEIGHTS[spec.vit], f"the {spec.vit} image encoder's weights")
    torch.manual_seed(spec.seed)
    cls = _blip2_class(spec)
    model = cls(vit_model=spec.vit, img_size=spec.image_size, drop_path_rate=0, use_grad_checkpoint=False,
                vit_precision="fp16" if cuda else "fp32", freeze_vit=True,
                num_query_token=spec.num_query_token, cross_attention_freq=spec.cross_attention_freq,
                embed_dim=spec.embed_dim, max_txt_len=spec.max_txt_len)
    if ckpt is not None:
        load_blip2_checkpoint(model, ckpt)
    backend = LavisBackend(model, spec)
    backend.eval()
    if device:
        backend.to(device)
    return backend


def load_blip2_checkpoint(model, path: str | os.PathLike):
    """Load a LAVIS BLIP-2 checkpoint (`{"model": state_dict, ...}`) into `model`. The image
    encoder's weights may be absent (LAVIS loads them from their own file); any other missing
    weight means the file is not this model's checkpoint."""
    import pickle
    import warnings

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        warnings.warn(f"{path} holds more than tensors and plain values; loading it with "
                      "weights_only=False, which runs its pickled code: use only files you trust")
        state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{path} is not a BLIP-2 checkpoint: expected a dict with a 'model' state dict")
    msg = model.load_state_dict(weights, strict=False)
    missing = [k for k in msg.missing_keys if not k.startswith("visual_encoder.")]
    if missing:
        raise ValueError(f"{path} is not a BLIP-2 Q-Former checkpoint for this model: it lacks "
                         f"{len(missing)} weights, e.g. {missing[:3]}")
    return msg


def check(out=sys.stdout) -> int:
    """Print the LAVIS environment's versions and which weight files are present."""
    require_lavis()
    import importlib.metadata as md

    for pkg in ("salesforce-lavis", "torch", "torchvision", "transformers", "timm", "numpy"):
        print(f"{pkg:18s} {md.version(pkg)}", file=out)
    print(f"weight cache       {weight_cache_dir()}", file=out)
    for name, info in MODEL_TYPES.items():
        if info["checkpoint"] is None:
            continue
        files = [info["checkpoint"], VIT_WEIGHTS[info["vit"]]]
        state = ["present" if weight_path(u).is_file() else f"missing ({u})" for u in files]
        print(f"{name:18s} " + "; ".join(f"{os.path.basename(u)}: {s}" for u, s in zip(files, state)), file=out)
    return 0


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.lavis_backend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check"])
    ap.parse_args(argv)
    try:
        return check()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
