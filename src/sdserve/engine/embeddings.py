"""Textual-inversion embeddings on a loaded model: loaded once, used by the prompts that name them.

A1111 uses an embedding wherever its file name appears as a word of the prompt. Here each
embedding is loaded with diffusers' ``load_textual_inversion`` under a private token
(``<ti-name>``), and only the prompts of requests that resolved it (``params.embeddings``,
found by ``engine.addon_refs``) have the word replaced by that token before encoding. So a
plain-text prompt (OpenAI, Workers AI) that happens to contain the word is read as text, as
those services read it, and batching rows with different embeddings changes no image.

Formats: A1111's ``.pt`` (``string_to_param``, read with torch's ``weights_only``), a
``.safetensors``/``.bin`` with one tensor (``emb_params`` or diffusers' ``{token: tensor}``), and
SDXL's two-encoder file (``clip_l`` for the first text encoder, ``clip_g`` for the second), loaded
into both tokenizers and encoders. A file whose width fits no encoder of the model (an SD 1.5
embedding on SDXL) is a ``BadInput`` naming ``embeddings``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from .addon_files import AddonFolders
from .addon_refs import embedding_words
from .params import EmbeddingRef
from .pipelines import LoadedModel

__all__ = ["ti_token", "with_embedding_tokens", "ensure_embeddings"]

log = logging.getLogger(__name__)


def ti_token(name: str) -> str:
    """The private token an embedding is loaded under (lower case: CLIP lowercases text)."""
    return "<ti-" + re.sub(r"[^a-z0-9_-]", "_", name.lower()) + ">"


def with_embedding_tokens(text: str, refs: tuple[EmbeddingRef, ...]) -> str:
    """``text`` with each word naming one of ``refs`` replaced by its private token."""
    if not refs or not text:
        return text
    names = [r.name for r in refs]
    for word in sorted(set(embedding_words(text, names)), key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", ti_token(word), text, flags=re.IGNORECASE)
    return text


def _vectors(path: Path) -> dict[str, torch.Tensor]:
    """The file's vectors by encoder ("clip_l", "clip_g") or under "" for a one-encoder file."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        data: Any = load_file(str(path))
    else:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError("not a dict of tensors")
    if "clip_l" in data or "clip_g" in data:
        return {k: data[k] for k in ("clip_l", "clip_g") if k in data}
    if "string_to_param" in data:  # A1111's own .pt
        data = data["string_to_param"]
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) != 1:
        raise ValueError(f"expected one tensor, found {len(tensors)}")
    return {"": tensors[0]}


def _pairs(pipe: Any, vectors: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, Any, Any]]:
    """(vectors, tokenizer, text encoder) per encoder the file is for."""
    two = getattr(pipe, "text_encoder_2", None) is not None
    if not two:
        if "clip_g" in vectors:
            raise ValueError("it is an SDXL embedding (clip_l + clip_g) and this is an SD 1.5 model")
        return [(vectors[""] if "" in vectors else vectors["clip_l"], pipe.tokenizer, pipe.text_encoder)]
    if "" in vectors:
        raise ValueError("it has one encoder's vectors and this SDXL model has two (an SDXL embedding holds "
                         "clip_l and clip_g)")
    return [(vectors[k], tok, enc) for k, tok, enc in (("clip_l", pipe.tokenizer, pipe.text_encoder),
                                                      ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
            if k in vectors]


def _load(pipe: Any, ref: EmbeddingRef, path: Path) -> None:
    token = ti_token(ref.name)
    try:
        pairs = _pairs(pipe, _vectors(path))
    except Exception as e:  # noqa: BLE001 - an unreadable or foreign file is the caller's to fix
        raise BadInput("embeddings", f"embedding {ref.name!r} could not be loaded: {e}") from None
    for vec, tok, enc in pairs:
        width = enc.get_input_embeddings().weight.shape[1]
        if vec.ndim == 1:
            vec = vec[None]
        if vec.shape[-1] != width:
            raise BadInput("embeddings", f"embedding {ref.name!r} is {vec.shape[-1]} wide but this model's text "
                                         f"encoder takes {width}: it is made for another family (SD 1.5 / SDXL)")
    for vec, tok, enc in pairs:
        pipe.load_textual_inversion(vec, token=token, tokenizer=tok, text_encoder=enc)


def _unload(pipe: Any, name: str) -> None:
    token = ti_token(name)
    for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (getattr(pipe, "tokenizer_2", None),
                                                          getattr(pipe, "text_encoder_2", None))):
        if tok is not None and token in tok.get_vocab():
            pipe.unload_textual_inversion(token, tokenizer=tok, text_encoder=enc)


def ensure_embeddings(model: LoadedModel, refs: tuple[EmbeddingRef, ...], addons: AddonFolders) -> None:
    """Load the embeddings of ``refs`` not yet on ``model`` (a changed file is loaded again)."""
    for ref in refs:
        if model.embeddings.get(ref.name) == ref.sha256:
            continue
        f = addons.find("embedding", ref.name, field="embeddings")
        if ref.name in model.embeddings:
            _unload(model.base, ref.name)
            del model.embeddings[ref.name]
        _load(model.base, ref, f.path)
        model.embeddings[ref.name] = ref.sha256
        log.info("loaded embedding %s on %s", ref.name, model.spec.id)
