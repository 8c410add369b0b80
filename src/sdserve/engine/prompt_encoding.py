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

A scheduled prompt (``[from:to:when]``, ``[a|b]``; prompt_schedule) is expanded over the pass's
steps; each distinct text of the prompt and the negative prompt is encoded once as above, all
padded with empty chunks to the row's longest (as A1111 pads the texts of one schedule), and
the row's ``Conditioning`` carries the schedule that ``batching`` switches through during
the loop.

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

from ..errors import BadInput
from .embeddings import with_embedding_tokens
from .params import EmbeddingRef, GenerationParams
from .prompt_schedule import Timeline, is_scheduled, prompt_schedule
from .prompt_syntax import BREAK, Fragment, ParsedPrompt, parse_comfy_prompt, parse_prompt, without_tags

__all__ = ["Conditioning", "encode_item", "needs_embeddings", "plain_text", "has_schedule"]

_CHUNK = 75  # tokens per chunk, without the start and end markers
_COMMA_BACKTRACK = 20


@dataclass
class Conditioning:
    """One item's prompt and negative prompt as embeddings (one row; repeated per image)."""

    prompt: torch.Tensor
    negative: torch.Tensor | None  # None: SDXL's zeros for "no negative prompt"
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    # Scheduled prompts: (last 0-based step, the conditioning up to it) in step order; the
    # fields above are the entry of the loop's first step. Empty: the same for every step.
    schedule: tuple[tuple[int, Conditioning], ...] = ()

    @property
    def length(self) -> int:
        return int(self.prompt.shape[1])

    def at(self, step: int) -> Conditioning:
        """The conditioning of 0-based loop step ``step``: the first entry it does not pass
        (A1111's reconstruct_cond_batch); a step past the schedule keeps its last entry."""
        return next((c for until, c in self.schedule if step <= until), self.schedule[-1][1] if self.schedule else self)


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _converted(pipe: Any, tok: Any, text: str) -> str:
    """A textual-inversion token spelled out as its vectors' tokens (``<ti-x> <ti-x>_1 ...``),
    as diffusers' own encode_prompt does; only text holding one pays for the tokenizer call."""
    return pipe.maybe_convert_prompt(text, tok) if "<ti-" in text and hasattr(pipe, "maybe_convert_prompt") else text


def _fits_one_chunk(pipe: Any, text: str) -> bool:
    return all(len(tok(_converted(pipe, tok, text), add_special_tokens=False).input_ids) <= _CHUNK
               for tok, _ in _encoders(pipe))


def _parse(text: str, syntax: str) -> ParsedPrompt:
    return parse_comfy_prompt(text) if syntax == "comfyui" else parse_prompt(text)


def _needs_own_encoding(pipe: Any, text: str, syntax: str = "a1111", refs: tuple[EmbeddingRef, ...] = ()) -> bool:
    parsed = _parse(text, syntax)
    return not parsed.plain or not _fits_one_chunk(pipe, with_embedding_tokens(parsed.text, refs))


def needs_embeddings(pipe: Any, params: GenerationParams) -> bool:
    """Whether this item's prompts need sdserve's encoding (A1111 or ComfyUI syntax that is
    not plain text, or clip skip: diffusers 0.42's own clip skip path reaches for ``text_model``,
    which transformers 5's CLIPTextModel no longer has, so the layer is picked here for every row)."""
    if params.clip_skip > 1:
        return True
    if params.prompt_syntax == "comfyui":
        return any(_needs_own_encoding(pipe, t, "comfyui", params.embeddings)
                   for t in (params.prompt, params.negative_prompt) if t)
    if params.prompt_syntax != "a1111":
        return False
    return has_schedule(params) or any(_needs_own_encoding(pipe, t, "a1111", params.embeddings)
                                       for t in (params.prompt, params.negative_prompt) if t)


def has_schedule(params: GenerationParams) -> bool:
    """Whether the item's prompt or negative prompt changes during the loop (A1111 syntax)."""
    return params.prompt_syntax == "a1111" and any(is_scheduled(without_tags(t))
                                                   for t in (params.prompt, params.negative_prompt) if t)


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


def _layer(enc: Any, out: Any, sdxl: bool, clip_skip: int) -> torch.Tensor:
    """The hidden state a model conditions on, as diffusers' ``encode_prompt`` picks it:
    SDXL the penultimate layer of both encoders (``clip_skip`` more layers back, no final
    norm); SD 1.5 the last layer, or with clip skip ``n`` > 1 the n-th from the end passed
    through the final layer norm (A1111's CLIP_stop_at_last_layers, diffusers' n - 1)."""
    layers = len(out.hidden_states) - 1
    if clip_skip > layers + (0 if sdxl else 1):
        raise BadInput("clip_skip", f"{clip_skip} skips past this model's text encoder, which has {layers} layers")
    z: torch.Tensor
    if sdxl:
        z = out.hidden_states[-(clip_skip + 1)]
    elif clip_skip == 1:
        z = out[0]
    else:  # transformers 5 keeps the final norm on the model itself; 4.x under text_model.
        z = getattr(enc, "text_model", enc).final_layer_norm(out.hidden_states[-clip_skip])
    return z


def _encode_chunks(tok: Any, enc: Any, fragments: tuple[Fragment, ...],
                   sdxl: bool, syntax: str = "a1111", pipe: Any = None,
                   clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder's embeddings of ``fragments`` (chunks concatenated) and its first
    chunk's pooled output (SDXL's second encoder gives the pooled embedding)."""
    if pipe is not None:  # embeddings' tokens spelled out for this tokenizer
        fragments = tuple(Fragment(_converted(pipe, tok, f.text), f.weight) if f.text != BREAK else f
                          for f in fragments)
    device = next(enc.parameters()).device

    def encode(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = enc(torch.tensor([ids], device=device), output_hidden_states=True)
        return _layer(enc, out, sdxl, clip_skip), out[0] if out[0].ndim == 2 else None

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


def _encode_weighted(pipe: Any, text: str, syntax: str = "a1111", refs: tuple[EmbeddingRef, ...] = (),
                     clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeddings [1, 77k, dim], pooled or None) of a prompt in A1111 (or ComfyUI) syntax."""
    fragments = tuple(Fragment(with_embedding_tokens(f.text, refs), f.weight) if f.text != BREAK else f
                      for f in _parse(text, syntax).fragments)
    encoders = _encoders(pipe)
    sdxl = len(encoders) == 2
    outs = [_encode_chunks(tok, enc, fragments, sdxl, syntax, pipe, clip_skip) for tok, enc in encoders]
    longest = max(z.shape[1] for z, _ in outs)
    # The two SDXL tokenizers split alike, but pad the shorter just in case.
    per_encoder = [z if z.shape[1] == longest else
                   _pad_to(z, longest, _encode_chunks(tok, enc, (), sdxl, syntax, None, clip_skip)[0])
                   for (z, _), (tok, enc) in zip(outs, encoders, strict=True)]
    dtype = encoders[-1][1].dtype
    return torch.cat(per_encoder, dim=-1).to(dtype), outs[-1][1]


def _empty_chunk(pipe: Any, clip_skip: int = 1) -> torch.Tensor:
    """The embedding of an empty chunk (what the shorter of prompt and negative is padded with)."""
    return _encode_weighted(pipe, "", clip_skip=clip_skip)[0]


def _pad_to(z: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    while z.shape[1] < length:
        z = torch.cat([z, empty.to(z.dtype)], dim=1)
    return z


def plain_text(text: str, syntax: str, embeddings: tuple[EmbeddingRef, ...] = ()) -> str:
    """What the text encoder reads of a prompt that needs no embeddings of sdserve's: the
    text without its A1111 or ComfyUI markup (escapes resolved, tags removed, textual-inversion
    names as their tokens, which diffusers' encode_prompt spells out), or the text as sent."""
    return with_embedding_tokens(_parse(text, syntax).text, embeddings) if syntax in ("a1111", "comfyui") else text


def _encode_truncated(pipe: Any, text: str, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain text as diffusers' ``encode_prompt(clip_skip=n - 1)`` encodes it (one 77-token
    window, the rest cut off), with the layer picked by :func:`_layer`."""
    encoders = _encoders(pipe)
    sdxl = len(encoders) == 2
    parts, pooled = [], None
    for tok, enc in encoders:
        ids = tok(_converted(pipe, tok, text), padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids
        out = enc(ids.to(next(enc.parameters()).device), output_hidden_states=True)
        pooled = out[0] if out[0].ndim == 2 else pooled
        parts.append(_layer(enc, out, sdxl, clip_skip))
    return torch.cat(parts, dim=-1).to(encoders[-1][1].dtype), pooled


def _encode(pipe: Any, text: str, syntax: str, refs: tuple[EmbeddingRef, ...] = (),
            clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    if syntax in ("a1111", "comfyui") and _needs_own_encoding(pipe, text, syntax, refs):
        return _encode_weighted(pipe, text, syntax, refs, clip_skip)
    if clip_skip > 1:
        return _encode_truncated(pipe, plain_text(text, syntax, refs), clip_skip)
    # Plain text: exactly what diffusers computes for it.
    out = pipe.encode_prompt(prompt=plain_text(text, syntax, refs), device=pipe._execution_device,
                             num_images_per_prompt=1,
                             do_classifier_free_guidance=False)
    return (out[0], out[2]) if len(out) == 4 else (out[0], None)


def encode_item(pipe: Any, params: GenerationParams, timeline: Timeline | None = None, start: int = 0) -> Conditioning:
    """The item's conditioning, one row (``run_batch`` repeats it per image). A scheduled
    prompt is expanded over ``timeline`` (default: the item's own steps) and starts at loop
    step ``start``."""
    if has_schedule(params):
        return _encode_scheduled(pipe, params, timeline or Timeline(int(params.steps or 1)), start)
    with torch.inference_mode():
        skip = params.clip_skip
        prompt, pooled = _encode(pipe, params.prompt, params.prompt_syntax, params.embeddings, skip)
        sdxl_zeros = params.negative_prompt == "" and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        if sdxl_zeros:
            return Conditioning(prompt, None, pooled, None)
        negative, negative_pooled = _encode(pipe, params.negative_prompt, params.prompt_syntax, params.embeddings,
                                            skip)
        longest = max(prompt.shape[1], negative.shape[1])
        if prompt.shape[1] != negative.shape[1] and params.prompt_syntax == "comfyui":
            common = math.lcm(prompt.shape[1], negative.shape[1])
            prompt = prompt.repeat(1, common // prompt.shape[1], 1)
            negative = negative.repeat(1, common // negative.shape[1], 1)
        elif prompt.shape[1] != negative.shape[1]:
            empty = _empty_chunk(pipe, skip)
            prompt, negative = _pad_to(prompt, longest, empty), _pad_to(negative, longest, empty)
        return Conditioning(prompt, negative, pooled, negative_pooled)


def _encode_scheduled(pipe: Any, params: GenerationParams, timeline: Timeline, start: int) -> Conditioning:
    """A row whose prompt or negative prompt is scheduled: each distinct text encoded once,
    every text padded to the row's longest, one Conditioning per step range."""
    sdxl_zeros = params.negative_prompt == "" and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    first = timeline.first_pass_steps

    def schedule(text: str) -> list[tuple[int, str]]:
        return prompt_schedule(without_tags(text), timeline.steps, first)

    prompts = schedule(params.prompt)
    negatives = [(timeline.steps, "")] if sdxl_zeros else schedule(params.negative_prompt)
    with torch.inference_mode():
        encoded = {text: _encode(pipe, text, "a1111", params.embeddings, params.clip_skip)
                   for text in dict.fromkeys(t for _, t in prompts + negatives)}
        longest = max(z.shape[1] for z, _ in encoded.values())
        if any(z.shape[1] != longest for z, _ in encoded.values()):
            empty = _empty_chunk(pipe, params.clip_skip)
            encoded = {t: (_pad_to(z, longest, empty), pooled) for t, (z, pooled) in encoded.items()}
    # One entry per step where either text may change; within it both texts are fixed.
    entries = []
    for until in sorted({u for u, _ in prompts} | {u for u, _ in negatives}):
        prompt, pooled = encoded[next(t for u, t in prompts if until <= u)]
        negative, negative_pooled = (None, None) if sdxl_zeros else encoded[next(t for u, t in negatives if until <= u)]
        entries.append((until, Conditioning(prompt, negative, pooled, negative_pooled)))
    now = next((c for until, c in entries if start <= until), entries[-1][1])
    return Conditioning(now.prompt, now.negative, now.pooled, now.negative_pooled, tuple(entries))
