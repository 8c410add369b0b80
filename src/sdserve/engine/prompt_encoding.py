"""Prompts in A1111 syntax turned into text-encoder embeddings (``prompt_embeds``).

A prompt that reads the same as plain text (every weight 1, no BREAK, within the encoder's 75
tokens) goes to diffusers as text, as before: the image is the one diffusers makes, and
``(x:1.0)`` gives the same pixels as ``x``. Otherwise every prompt of the loop is encoded
here, one row at a time, so no row's conditioning depends on its neighbours:

- the text is tokenized fragment by fragment (A1111 does the same), in chunks of 75 tokens
  (a chunk that overflows moves back to its last comma when one is within 20 tokens; BREAK
  ends a chunk), each chunk wrapped in start/end markers and padded as the tokenizer pads;
- each chunk is encoded alone and its token embeddings scaled by their weights, then the
  chunk is rescaled to its original mean (A1111's "Original" emphasis);
- chunks are concatenated (77 x k tokens); positive and negative are padded to the same
  length with empty chunks; SDXL's pooled embedding comes from the first chunk;
- rows that read as plain text are encoded by the pipeline's own ``encode_prompt``.

Loops need one sequence length for all their rows: ``run_batch`` splits a batch whose
prompts need different chunk counts into loops of equal length.

ComfyUI's syntax (``prompt_syntax="comfyui"``) is encoded as ComfyUI's sd1_clip does: each
weighted segment under 8 tokens moves whole to the next chunk instead of being split; a
weighted token is moved away from the empty prompt's embedding (``(z - z_empty) * w +
z_empty``) with no mean rescale; and prompt and negative of different lengths are repeated
to a common multiple (ComfyUI's CONDCrossAttn.concat), which attention reads exactly as the
unrepeated sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .params import GenerationParams
from .prompt_syntax import BREAK, Fragment, ParsedPrompt, parse_comfy_prompt, parse_prompt

__all__ = ["Conditioning", "encode_item", "needs_embeddings", "plain_text"]

_CHUNK = 75  # tokens per chunk, without the start and end markers
_COMMA_BACKTRACK = 20


@dataclass
class Conditioning:
    """One item's prompt and negative prompt as embeddings (one row; repeated per image)."""

    prompt: torch.Tensor
    negative: torch.Tensor | None  # None: SDXL's zeros for "no negative prompt"
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.prompt.shape[1])


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _fits_one_chunk(pipe: Any, text: str) -> bool:
    return all(len(tok(text, add_special_tokens=False).input_ids) <= _CHUNK for tok, _ in _encoders(pipe))


def _parse(text: str, syntax: str) -> ParsedPrompt:
    return parse_comfy_prompt(text) if syntax == "comfyui" else parse_prompt(text)


def _needs_own_encoding(pipe: Any, text: str, syntax: str = "a1111") -> bool:
    parsed = _parse(text, syntax)
    return not parsed.plain or not _fits_one_chunk(pipe, parsed.text)


def needs_embeddings(pipe: Any, params: GenerationParams) -> bool:
    """Whether this item's prompts need sdserve's encoding (A1111 or ComfyUI syntax that is
    not plain text)."""
    if params.prompt_syntax == "comfyui":
        return any(_needs_own_encoding(pipe, t, "comfyui") for t in (params.prompt, params.negative_prompt) if t)
    if params.prompt_syntax != "a1111":
        return False
    return any(_needs_own_encoding(pipe, t) for t in (params.prompt, params.negative_prompt) if t)


def _chunks(tok: Any, fragments: tuple[Fragment, ...]) -> list[tuple[list[int], list[float]]]:
    """Token ids and weights per chunk, each ``_CHUNK`` long at most (no markers yet)."""
    comma = tok.convert_tokens_to_ids(",</w>")
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []

    def close() -> None:
        nonlocal ids, weights
        chunks.append((ids, weights))
        ids, weights = [], []

    for frag in fragments:
        if frag.text == BREAK:
            close()
            continue
        for t in tok(frag.text, add_special_tokens=False).input_ids:
            if len(ids) == _CHUNK:
                last_comma = max((i for i, v in enumerate(ids) if v == comma), default=-1)
                if last_comma >= 0 and len(ids) - 1 - last_comma <= _COMMA_BACKTRACK:
                    rest_ids, rest_w = ids[last_comma + 1:], weights[last_comma + 1:]
                    ids, weights = ids[:last_comma + 1], weights[:last_comma + 1]
                    close()
                    ids, weights = rest_ids, rest_w
                else:
                    close()
            ids.append(t)
            weights.append(frag.weight)
    if ids or not chunks:
        close()
    return chunks


def _comfy_chunks(tok: Any, fragments: tuple[Fragment, ...]) -> list[tuple[list[int], list[float]]]:
    """ComfyUI's chunks: a segment that does not fit starts the next chunk whole when it is
    under 8 tokens, and is split at the chunk's end otherwise (sd1_clip tokenize_with_weights)."""
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    for frag in fragments:
        group = tok(frag.text, add_special_tokens=False).input_ids
        whole = len(group) < 8
        while group:
            if len(ids) + len(group) <= _CHUNK:
                ids, weights, group = ids + group, weights + [frag.weight] * len(group), []
                continue
            if not whole:
                room = _CHUNK - len(ids)
                ids, weights, group = ids + group[:room], weights + [frag.weight] * room, group[room:]
            chunks.append((ids, weights))
            ids, weights = [], []
    chunks.append((ids, weights))
    return chunks


def _interpolated(z: torch.Tensor, empty: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """ComfyUI's emphasis: each weighted token moved away from (or toward) the empty prompt's
    embedding at its position, by its weight."""
    w = torch.tensor(weights, dtype=z.dtype, device=z.device).reshape(1, -1, 1)
    return torch.where(w != 1.0, (z - empty) * w + empty, z)


def _framed(tok: Any, ids: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    """A chunk with start/end markers, padded as the tokenizer pads (to 77)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    body = [tok.bos_token_id, *ids, tok.eos_token_id]
    n = _CHUNK + 2 - len(body)
    return body + [pad] * n, [1.0, *weights, 1.0] + [1.0] * n


def _emphasis(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Scale each token's embedding by its weight, keeping the chunk's mean (A1111 "Original")."""
    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=z.dtype, device=z.device).reshape(1, -1, 1)
    original = z.mean()
    z = z * w
    new = z.mean()
    # The rescale assumes a mean well away from zero, as SD's text encoders give. An encoder
    # whose last layer norm centres every token (random-weight test models) has a mean of
    # about 0 before and after: dividing one rounding error by another would flip the sign of
    # the embeddings or make them infinite, so such a chunk keeps its weighted values.
    floor = 1e-3 * float(z.abs().mean())
    if abs(float(original)) > floor and abs(float(new)) > floor and float(original / new) > 0:
        z = z * (original / new)
    return z


def _encode_chunks(tok: Any, enc: Any, fragments: tuple[Fragment, ...],
                   sdxl: bool, syntax: str = "a1111") -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder's embeddings of ``fragments`` (chunks concatenated) and its first
    chunk's pooled output (SDXL's second encoder gives the pooled embedding)."""
    device = next(enc.parameters()).device

    def encode(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = enc(torch.tensor([ids], device=device), output_hidden_states=True)
        # SDXL conditions on the penultimate layer of both encoders; SD 1.5 on the last.
        return out.hidden_states[-2] if sdxl else out[0], out[0] if out[0].ndim == 2 else None

    comfy = syntax == "comfyui"
    parts, pooled, empty = [], None, None
    for k, (ids, weights) in enumerate((_comfy_chunks if comfy else _chunks)(tok, fragments)):
        ids, weights = _framed(tok, ids, weights)
        z, chunk_pooled = encode(ids)
        if k == 0:
            pooled = chunk_pooled
        if comfy and any(w != 1.0 for w in weights):
            empty = encode(_framed(tok, [], [])[0])[0] if empty is None else empty
            parts.append(_interpolated(z, empty, weights))
        else:
            parts.append(z if comfy else _emphasis(z, weights))
    return torch.cat(parts, dim=1), pooled


def _encode_weighted(pipe: Any, text: str, syntax: str = "a1111") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeddings [1, 77k, dim], pooled or None) of a prompt in A1111 (or ComfyUI) syntax."""
    fragments = _parse(text, syntax).fragments
    encoders = _encoders(pipe)
    sdxl = len(encoders) == 2
    outs = [_encode_chunks(tok, enc, fragments, sdxl, syntax) for tok, enc in encoders]
    longest = max(z.shape[1] for z, _ in outs)
    # The two SDXL tokenizers split alike, but pad the shorter just in case.
    per_encoder = [z if z.shape[1] == longest else _pad_to(z, longest, _encode_chunks(tok, enc, (), sdxl)[0])
                   for (z, _), (tok, enc) in zip(outs, encoders, strict=True)]
    dtype = encoders[-1][1].dtype
    return torch.cat(per_encoder, dim=-1).to(dtype), outs[-1][1]


def _empty_chunk(pipe: Any) -> torch.Tensor:
    """The embedding of an empty chunk (what the shorter of prompt and negative is padded with)."""
    return _encode_weighted(pipe, "")[0]


def _pad_to(z: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    while z.shape[1] < length:
        z = torch.cat([z, empty.to(z.dtype)], dim=1)
    return z


def plain_text(text: str, syntax: str) -> str:
    """What the text encoder reads of a prompt that needs no embeddings of sdserve's: the
    text without its A1111 or ComfyUI markup (escapes resolved, tags removed), or the text as sent."""
    return _parse(text, syntax).text if syntax in ("a1111", "comfyui") else text


def _encode(pipe: Any, text: str, syntax: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if syntax in ("a1111", "comfyui") and _needs_own_encoding(pipe, text, syntax):
        return _encode_weighted(pipe, text, syntax)
    # Plain text: exactly what diffusers computes for it.
    out = pipe.encode_prompt(prompt=plain_text(text, syntax), device=pipe._execution_device, num_images_per_prompt=1,
                             do_classifier_free_guidance=False)
    return (out[0], out[2]) if len(out) == 4 else (out[0], None)


def encode_item(pipe: Any, params: GenerationParams) -> Conditioning:
    """The item's conditioning, one row (``run_batch`` repeats it per image)."""
    with torch.inference_mode():
        prompt, pooled = _encode(pipe, params.prompt, params.prompt_syntax)
        sdxl_zeros = params.negative_prompt == "" and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        if sdxl_zeros:
            return Conditioning(prompt, None, pooled, None)
        negative, negative_pooled = _encode(pipe, params.negative_prompt, params.prompt_syntax)
        longest = max(prompt.shape[1], negative.shape[1])
        if prompt.shape[1] != negative.shape[1] and params.prompt_syntax == "comfyui":
            common = math.lcm(prompt.shape[1], negative.shape[1])
            prompt = prompt.repeat(1, common // prompt.shape[1], 1)
            negative = negative.repeat(1, common // negative.shape[1], 1)
        elif prompt.shape[1] != negative.shape[1]:
            empty = _empty_chunk(pipe)
            prompt, negative = _pad_to(prompt, longest, empty), _pad_to(negative, longest, empty)
        return Conditioning(prompt, negative, pooled, negative_pooled)
