"""A request's LoRAs and embeddings, resolved to files before it is queued (torch-free).

``prepare`` calls :func:`resolve_addons`: A1111 ``<lora:name:weight>`` tags in the prompt and
the negative prompt (A1111 reads both) are merged with the explicit ``loras`` (native ``loras``,
ModelsLab ``lora_model``), each name is found in the server's LoRA folders
(``engine.addon_files``) and recorded under its canonical name with the file's hash. The same
LoRA named twice with the same weight counts once (so resolving twice changes nothing); with
different weights it is refused, naming the field.

Embeddings are used as A1111 uses them: a word of an A1111-syntax prompt equal to an
embedding's file name (case-insensitive, as CLIP lowercases) selects it; a dialect may also name
one explicitly (ModelsLab ``embeddings_model``), which must then appear in a prompt.

Hashes are A1111's: for a LoRA in safetensors the "addnet" hash (SHA-256 of the file after its
JSON header, so editing the metadata keeps it), otherwise the file's SHA-256; infotext shows
the first 12 hex digits (``Lora hashes``, ``TI hashes``). Both are cached per path and mtime.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from functools import lru_cache

from pydantic import ValidationError

from ..errors import BadInput
from .addon_files import AddonFile, AddonFolders
from .params import EmbeddingRef, GenerationParams, LoraRef, normal_loras
from .prompt_syntax import parse_prompt

__all__ = ["resolve_addons", "lora_hash", "embedding_words", "SHORT_HASH"]

SHORT_HASH = 12  # hex digits A1111 writes in "Lora hashes" and "TI hashes"


@lru_cache(maxsize=256)
def _addnet_sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + header_len)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lora_hash(f: AddonFile) -> str:
    """A1111's hash of a LoRA file (addnet hash for safetensors, else the file's SHA-256)."""
    if f.is_dir or f.path.suffix.lower() != ".safetensors":
        return f.sha256()
    st = f.path.stat()
    try:
        return _addnet_sha256(str(f.path), st.st_size, st.st_mtime)
    except (OSError, struct.error):
        return f.sha256()


def _tagged(p: GenerationParams) -> list[tuple[str, LoraRef]]:
    """(field, LoRA) for each <lora:...> tag of an A1111-syntax prompt."""
    if p.prompt_syntax != "a1111":
        return []
    out = []
    for name in ("prompt", "negative_prompt"):
        for t in parse_prompt(getattr(p, name) or "", name).loras:
            try:
                out.append((name, LoraRef(name=t.name, weight=t.weight, text_encoder_weight=t.text_encoder_weight)))
            except ValidationError:
                raise BadInput(name, f"<lora:{t.name[:60]}:{t.weight:g}>: use a name of at most 255 characters "
                                     "and a weight from -10 to 10") from None
    return out


def _resolve_loras(p: GenerationParams, addons: AddonFolders | None,
                   preset: tuple[tuple[str, float], ...]) -> tuple[LoraRef, ...]:
    wanted = [("model", LoraRef(name=n, weight=w)) for n, w in preset] + [("loras", r) for r in p.loras] + _tagged(p)
    if not wanted:
        return ()
    if addons is None:
        raise BadInput(wanted[0][0], "this server has no add-on folders; LoRAs are not available")
    out: dict[str, tuple[str, LoraRef]] = {}
    for field, ref in wanted:
        f = addons.find("lora", ref.name, field=field)
        # A text-encoder weight equal to the UNet's is no separate weight (one batch key).
        te = None if ref.te_weight == ref.weight else ref.te_weight
        resolved = LoraRef(name=f.name, weight=ref.weight, sha256=lora_hash(f), text_encoder_weight=te)
        seen = out.get(f.name)
        if seen is not None and (seen[1].weight, seen[1].te_weight) != (ref.weight, ref.te_weight):
            raise BadInput(field, f"LoRA {f.stem!r} is named twice with different weights ({seen[1].weight:g} in "
                                  f"{seen[0]}, {ref.weight:g} here); name it once")
        out.setdefault(f.name, (field, resolved))
    return normal_loras([r for _, r in out.values()])


@lru_cache(maxsize=64)
def _word_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?![\w-])", re.IGNORECASE)


def embedding_words(text: str, stems: Iterable[str]) -> list[str]:
    """The embedding names (as given in ``stems``) that ``text`` uses as words."""
    pattern = _word_pattern(tuple(sorted(set(stems))))
    if pattern is None or not text:
        return []
    by_lower = {s.lower(): s for s in stems}
    return [by_lower[m.group(1).lower()] for m in pattern.finditer(text)]


def _resolve_embeddings(p: GenerationParams, addons: AddonFolders | None) -> tuple[EmbeddingRef, ...]:
    explicit = list(p.embeddings)
    if addons is None:
        if explicit:
            raise BadInput("embeddings", "this server has no add-on folders; embeddings are not available")
        return ()
    files = {f.stem: f for f in addons.files("embedding")}
    texts = [parse_prompt(t).text if p.prompt_syntax == "a1111" else "" for t in (p.prompt, p.negative_prompt)]
    used = {w for t in texts for w in embedding_words(t, files)}
    for ref in explicit:
        f = addons.find("embedding", ref.name, field="embeddings")
        if f.stem not in used:
            raise BadInput("embeddings", f"embedding {f.stem!r} is not used: write its name, {f.stem}, in the prompt "
                                         "or the negative prompt where it should apply")
    return tuple(EmbeddingRef(name=s, sha256=files[s].sha256()) for s in sorted(used))


def resolve_addons(p: GenerationParams, addons: AddonFolders | None,
                   preset: tuple[tuple[str, float], ...] = ()) -> GenerationParams:
    """``p`` with its LoRAs (the model preset's, explicit ones and tags merged) and embeddings
    resolved to files; BadInput naming the field for a name that finds no file, leaves the
    folders, or conflicts."""
    loras = _resolve_loras(p, addons, preset)
    embeddings = _resolve_embeddings(p, addons)
    if loras == p.loras and embeddings == p.embeddings:
        return p
    return p.model_copy(update={"loras": loras, "embeddings": embeddings})

