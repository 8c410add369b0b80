"""Prompts for a pipeline with one text encoder: the SDXL refiner (OpenCLIP-G only).

``prompt_encoding`` reads a prompt with a model's text encoders, the first always there; the
refiner has only the second (its model_index lists ``text_encoder`` as null). Its prompts are
read the same way with that one encoder: plain text by diffusers' own ``encode_prompt``
(which takes the refiner as it is), A1111 or ComfyUI syntax chunk by chunk, SDXL's
penultimate layer, the pooled embedding from the first chunk, and positive and negative
brought to one length as ``prompt_encoding.encode_item`` does. The refiner encodes an empty
negative prompt as text (its ``force_zeros_for_empty_prompt`` is off), as ComfyUI and A1111 do.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .embeddings import with_embedding_tokens
from .params import EmbeddingRef, GenerationParams
from .prompt_encoding import _CHUNK, Conditioning, _converted, _encode_chunks, _parse, plain_text
from .prompt_syntax import BREAK, Fragment

__all__ = ["single_encoder", "needs_single_encoder_embeddings", "encode_single_encoder_item"]


def single_encoder(pipe: Any) -> bool:
    """True for a pipeline whose only text encoder is the second (the SDXL refiner)."""
    return getattr(pipe, "text_encoder", None) is None and getattr(pipe, "text_encoder_2", None) is not None


def _own_encoding(pipe: Any, text: str, syntax: str, refs: tuple[EmbeddingRef, ...]) -> bool:
    if syntax not in ("a1111", "comfyui"):
        return False
    parsed = _parse(text, syntax)
    tok = pipe.tokenizer_2
    words = _converted(pipe, tok, with_embedding_tokens(parsed.text, refs))
    return not parsed.plain or len(tok(words, add_special_tokens=False).input_ids) > _CHUNK


def needs_single_encoder_embeddings(pipe: Any, params: GenerationParams) -> bool:
    """``prompt_encoding.needs_embeddings`` for a one-encoder pipeline."""
    return params.clip_skip > 1 or any(_own_encoding(pipe, t, params.prompt_syntax, params.embeddings)
                                       for t in (params.prompt, params.negative_prompt))


def _encode(pipe: Any, text: str, params: GenerationParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    syntax, refs = params.prompt_syntax, params.embeddings
    if params.clip_skip == 1 and not _own_encoding(pipe, text, syntax, refs):
        out = pipe.encode_prompt(prompt=plain_text(text, syntax, refs), device=pipe._execution_device,
                                 num_images_per_prompt=1, do_classifier_free_guidance=False)
        return out[0], out[2]
    if syntax in ("a1111", "comfyui"):
        fragments = tuple(Fragment(with_embedding_tokens(f.text, refs), f.weight) if f.text != BREAK else f
                          for f in _parse(text, syntax).fragments)
    else:  # plain text with clip skip: one fragment (chunked, not cut at 77 tokens)
        fragments = (Fragment(text, 1.0),)
    z, pooled = _encode_chunks(pipe.tokenizer_2, pipe.text_encoder_2, fragments, True, syntax, pipe,
                               params.clip_skip)
    return z.to(pipe.text_encoder_2.dtype), pooled


def encode_single_encoder_item(pipe: Any, params: GenerationParams) -> Conditioning:
    """The item's conditioning on a one-encoder pipeline (``prompt_encoding.encode_item``)."""
    with torch.inference_mode():
        prompt, pooled = _encode(pipe, params.prompt, params)
        negative, negative_pooled = _encode(pipe, params.negative_prompt, params)
        if prompt.shape[1] != negative.shape[1]:
            if params.prompt_syntax == "comfyui":  # ComfyUI repeats both to a common multiple
                common = math.lcm(prompt.shape[1], negative.shape[1])
                prompt = prompt.repeat(1, common // prompt.shape[1], 1)
                negative = negative.repeat(1, common // negative.shape[1], 1)
            else:  # A1111 pads the shorter with empty chunks
                empty = _encode_chunks(pipe.tokenizer_2, pipe.text_encoder_2, (), True, params.prompt_syntax,
                                       None, params.clip_skip)[0].to(prompt.dtype)
                longest = max(prompt.shape[1], negative.shape[1])
                while prompt.shape[1] < longest:
                    prompt = torch.cat([prompt, empty], dim=1)
                while negative.shape[1] < longest:
                    negative = torch.cat([negative, empty], dim=1)
        return Conditioning(prompt, negative, pooled, negative_pooled)
