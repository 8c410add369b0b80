"""AUTOMATIC1111's prompt syntax, parsed without torch: emphasis, BREAK and add-on tags.

What it reads (as A1111 1.10 does):
- ``(text)`` multiplies the weight of ``text`` by 1.1, ``((text))`` by 1.21, ``[text]`` divides
  by 1.1; ``(text:1.3)`` sets the factor to 1.3 (nested groups multiply);
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters;
- ``BREAK`` (upper case, a word on its own) starts a new 75-token chunk;
- ``<lora:name:weight>`` and ``<lyco:name:weight>`` tags name LoRAs and are removed from the text
  (``prepare`` moves them into ``loras``; a third part, A1111's separate UNet weight, is refused);
- an unclosed ``(`` or ``[`` applies to the end of the prompt, a stray ``)`` or ``]`` is text.

Scheduled prompts (``[from:to:when]``, ``[a|b]``) are expanded by ``prompt_schedule`` into
one text per step range before this parser reads each text; brackets that are no scheduled
form are read here as A1111 reads them (``[a:b:x]`` is ``a:b:x`` at 1/1.1).

The parser is torch-free so that ``prepare`` can check a prompt where the request arrives;
``prompt_encoding`` turns its fragments into text-encoder embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadInput

__all__ = ["Fragment", "ParsedPrompt", "LoraTag", "parse_prompt", "without_tags", "EMPHASIS", "BREAK", "parse_comfy_prompt"]

EMPHASIS = 1.1
# A fragment with this text marks a chunk boundary.
BREAK = "\x00BREAK"

_TAG = re.compile(r"<(lora|lyco):([^:<>]+)(?::([^:<>]*))?(?::([^<>]*))?>", re.IGNORECASE)
# One token of the syntax: an escape, a bracket, a ":weight)" close, BREAK, or plain text.
_TOKEN = re.compile(r"""
    \\[()\[\]\\]                # escaped bracket or backslash
  | \(|\[                       # open
  | :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ":1.3)" closes a weighted group
  | \)|\]                       # close
  | \bBREAK\b                   # chunk break
  | [^\\()\[\]:B]+              # plain text (B and ':' are taken one at a time below)
  | .                           # anything else, one character
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True)
class Fragment:
    """A run of text and the weight its tokens get (or the BREAK marker)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class LoraTag:
    """A ``<lora:name:weight>`` tag found in a prompt: ``weight`` is the UNet multiplier and
    ``text_encoder_weight`` the text encoders' where the tag gives them apart."""

    name: str
    weight: float
    text_encoder_weight: float | None = None


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as fragments with weights, plus the add-on tags taken out of it."""

    fragments: tuple[Fragment, ...]
    loras: tuple[LoraTag, ...] = ()
    # How the text was read where A1111 silently guesses (an unclosed bracket).
    warnings: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The text without syntax (what the text encoder reads when no weight differs)."""
        return "".join(f.text for f in self.fragments if f.text != BREAK)

    @property
    def plain(self) -> bool:
        """True when encoding ``text`` as it is gives the same conditioning: every weight is
        1 and there is no BREAK (a long prompt still needs chunks; the encoder decides)."""
        return all(f.weight == 1.0 and f.text != BREAK for f in self.fragments)


def _number(tag: str, text: str, what: str, field: str) -> float:
    try:
        return float(text.strip() or "1")
    except ValueError:
        raise BadInput(field, f"{tag!r}: the LoRA {what} {text.strip()!r} is not a number") from None


def _tags(prompt: str, field: str) -> tuple[str, tuple[LoraTag, ...]]:
    """The prompt without its LoRA tags, and the tags. A1111's arguments after the name:
    positional ``te`` then ``unet`` multipliers (``unet`` defaults to ``te``), or named
    ``te=``/``unet=``; ``dyn`` (dynamic rank) is refused by name."""
    tags = []
    for m in _TAG.finditer(prompt):
        args = [a for a in (m.group(3), *(m.group(4).split(":") if m.group(4) is not None else ())) if a is not None]
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        named = {k.strip(): v for k, v in named.items()}
        unknown = set(named) - {"te", "unet", "dyn"}
        if "dyn" in named or len(positional) > 2 or unknown:
            what = "dyn" if "dyn" in named or len(positional) > 2 else sorted(unknown)[0]
            raise BadInput(field, f"{m.group(0)!r}: the LoRA argument {what!r} is not supported; write "
                                  "<lora:name:weight> or <lora:name:te_weight:unet_weight>")
        te = _number(m.group(0), positional[0], "weight", field) if positional else 1.0
        te = _number(m.group(0), named["te"], "te weight", field) if "te" in named else te
        unet = _number(m.group(0), positional[1], "UNet weight", field) if len(positional) > 1 else te
        unet = _number(m.group(0), named["unet"], "unet weight", field) if "unet" in named else unet
        tags.append(LoraTag(m.group(2).strip(), unet, None if te == unet else te))
    return _TAG.sub("", prompt), tuple(tags)


def without_tags(prompt: str) -> str:
    """``prompt`` with its ``<lora:...>`` / ``<lyco:...>`` tags removed (A1111 takes them out
    before it expands a scheduled prompt, so their colons are no schedule's)."""
    return _TAG.sub("", prompt)


def parse_prompt(prompt: str, field: str = "prompt") -> ParsedPrompt:
    """Parse A1111 syntax; BadInput naming ``field`` for what sdserve cannot apply."""
    text, loras = _tags(prompt, field)
    out: list[list[object]] = []  # [text, weight] pairs, merged when weights match
    opens: list[tuple[str, int]] = []  # (bracket, index into out where the group starts)

    def add(s: str, weight: float = 1.0) -> None:
        out.append([s, weight])

    def close(kind: str, factor: float) -> bool:
        if not opens or opens[-1][0] != kind:
            return False
        _, start = opens.pop()
        for frag in out[start:]:
            frag[1] = float(frag[1]) * factor  # type: ignore[arg-type]
        return True

    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok.startswith("\\"):
            add(tok[1:])
        elif tok in ("(", "["):
            opens.append((tok, len(out)))
        elif m.group(1) is not None:  # ":w)"
            if not close("(", float(m.group(1))):
                add(tok)
        elif tok == ")":
            if not close("(", EMPHASIS):
                add(tok)
        elif tok == "]":
            if not close("[", 1 / EMPHASIS):
                add(tok)
        elif tok == "BREAK":
            add(BREAK)
        else:
            add(tok)
    warnings = []
    if opens:
        kinds = "".join(k for k, _ in opens)
        warnings.append(f"{field}: {len(opens)} bracket(s) {kinds!r} never closed; as in A1111, the emphasis runs "
                        "to the end of the prompt (close it, or write \\( for a literal bracket)")
    while opens:  # unclosed groups apply to the end of the prompt
        kind, _ = opens[-1]
        close(kind, EMPHASIS if kind == "(" else 1 / EMPHASIS)
    merged: list[Fragment] = []
    for s, w in out:
        s, w = str(s), float(w)  # type: ignore[arg-type]
        if merged and merged[-1].weight == w and s != BREAK and merged[-1].text != BREAK:
            merged[-1] = Fragment(merged[-1].text + s, w)
        elif s:
            merged.append(Fragment(s, w))
    # A BREAK swallows the spaces around it, as A1111's does.
    cleaned = []
    for i, f in enumerate(merged):
        t = f.text
        if t != BREAK:
            if i > 0 and merged[i - 1].text == BREAK:
                t = t.lstrip()
            if i + 1 < len(merged) and merged[i + 1].text == BREAK:
                t = t.rstrip()
            if not t:
                continue
        cleaned.append(Fragment(t, f.weight))
    return ParsedPrompt(tuple(cleaned), loras, tuple(warnings))


# ---- ComfyUI's prompt syntax (comfy/sd1_clip.py: token_weights, escape_important) --------
# ``(text)`` multiplies by 1.1 and ``(text:w)`` SETS the weight to w (ComfyUI does not multiply
# an explicit weight by the enclosing groups'); ``\(`` and ``\)`` are literal. There is no
# ``[text]``, BREAK or ``<lora:...>``: they are text. Each weighted segment is tokenized on its
# own and kept whole in a chunk when it is under 8 tokens (prompt_encoding does that).
_COMFY_OPEN, _COMFY_CLOSE = "\x00\x02", "\x00\x01"
# ComfyUI reads "embedding:name" (after whitespace or at the start) as a textual inversion.
_COMFY_EMBEDDING = re.compile(r"(?:^|(?<=\s))embedding:(\S*)")


def _comfy_groups(text: str) -> list[str]:
    """``text`` split at its top-level parenthesised groups, as ComfyUI splits it (a stray ``)``
    sends the nesting count below zero, so what follows stays text until it climbs back)."""
    parts: list[str] = []
    current, depth = "", 0
    for ch in text:
        if ch == "(" and depth == 0:
            if current:
                parts.append(current)
            current, depth = "(", 1
        elif ch == "(":
            current, depth = current + ch, depth + 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def _comfy_weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _comfy_groups(text):
        if len(part) < 2 or part[0] != "(" or part[-1] != ")":
            out.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight, inner = float(inner[colon + 1:]), inner[:colon]
            except ValueError:
                pass  # not a number: the colon is text and the group weighs 1.1
        out.extend(_comfy_weights(inner, inner_weight))
    return out


def parse_comfy_prompt(prompt: str, field: str = "prompt") -> ParsedPrompt:
    """Parse ComfyUI's syntax into one fragment per weighted segment (never merged: each is
    tokenized on its own); BadInput naming ``field`` for what sdserve cannot apply."""
    escaped = prompt.replace("\\)", _COMFY_CLOSE).replace("\\(", _COMFY_OPEN)
    fragments = []
    for text, weight in _comfy_weights(escaped, 1.0):
        if weight != weight or weight in (float("inf"), float("-inf")):
            raise BadInput(field, f"the weight of {text!r} is not a finite number")
        text = text.replace(_COMFY_CLOSE, ")").replace(_COMFY_OPEN, "(")
        found = _COMFY_EMBEDDING.search(text)
        if found:
            raise BadInput(field, f"'embedding:{found.group(1)}': textual-inversion embeddings are not available "
                                  "on this server yet; remove it")
        if text:
            fragments.append(Fragment(text, weight))
    return ParsedPrompt(tuple(fragments))
