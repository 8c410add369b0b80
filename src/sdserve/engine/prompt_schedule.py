"""A1111's scheduled prompts, expanded torch-free: prompt editing and alternation.

- ``[from:to:when]`` reads ``from`` up to step ``when`` and ``to`` after it; ``[to:when]``
  adds ``to`` after ``when``; ``[from::when]`` removes ``from`` after ``when``;
- ``[a|b|c]`` alternates every step (``a`` at step 1, ``b`` at 2, ...; empty options count);
- forms nest, and hold A1111's emphasis (``[(cat:1.2):dog:0.5]``): each step's text is read
  by ``prompt_syntax`` like any prompt.

``when`` is read as A1111 1.10 reads it by default ("new" prompt editing timelines): with a
decimal point it is a fraction of the steps (``0.5``), without one a step number (``10``). In
the hires fix pass the timeline goes on: fractions from 1 to 2 and step numbers past the first
pass's steps fall in the hires steps, anything earlier has already happened.

A prompt expands into its schedule: ``[(until, text), ...]``, each text used while the loop's
0-based step is at most ``until`` (A1111's ``reconstruct_cond_batch``: ``step <= end_at_step``),
the last ``until`` being the pass's step count. Brackets that do not parse as one of these forms
(``[a:b:x]``, an unclosed ``[``) leave the whole prompt as text, as in A1111, where
``prompt_syntax`` reads them as emphasis or literal characters.

The parser is lark's Earley parser over a grammar for the same language as A1111's
(``modules/prompt_parser.py``), so ambiguous bracket soup resolves the way A1111 resolves it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import lark

__all__ = ["Timeline", "is_scheduled", "prompt_schedule"]

# The same language as A1111's schedule_parser, rule for rule in the same order (Earley picks
# between ambiguous readings by it): text that is no form stays text, stray brackets included.
_GRAMMAR = r"""
!start: (body | /[][():]/+)*
body: (group | edit | alternation | text | WHITESPACE)*
!group: "(" body ")"
      | "(" body ":" body ")"
      | "[" body "]"
edit: "[" [body ":"] body ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternation: "[" body ("|" [body])+ "]"
WHITESPACE: /\s+/
text: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


# What every [from:to:when] holds: ':' then a number (SIGNED_NUMBER) and ']', with optional
# spaces; a weight's ":1.2)" is not it.
_EDIT_END = re.compile(r":\s*[+-]?\.?\d[\d.eE+-]*\s*\]")


@dataclass(frozen=True)
class Timeline:
    """Which steps a pass's prompt schedule spans (A1111's prompt editing timeline)."""

    steps: int  # the pass's steps
    # The hires fix pass: the first pass's steps (``when`` counts on from the first pass).
    first_pass_steps: int | None = None
    # The refiner: its loop continues the first pass's step count (one schedule for both).
    continues: bool = False


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)


@functools.lru_cache(maxsize=512)
def _tree(prompt: str) -> lark.Tree[lark.Token] | None:
    """The parse of ``prompt``, or None when it holds no scheduled form (or does not parse)."""
    # Earley parsing costs milliseconds per hundred characters: it is skipped for every prompt
    # that cannot hold a scheduled form, so plain and weighted prompts pay nothing for it.
    if "[" not in prompt or ("|" not in prompt and not _EDIT_END.search(prompt)):
        return None
    try:
        tree = _parser().parse(prompt)
    except lark.exceptions.LarkError:
        return None
    return tree if any(t.data in ("edit", "alternation") for t in tree.iter_subtrees()) else None


def is_scheduled(prompt: str) -> bool:
    """Whether ``prompt`` changes during the loop (holds a form that parses)."""
    return _tree(prompt) is not None


def _when(number: str, steps: int, first_pass_steps: int | None) -> int:
    """The last step of a ``when`` (A1111's new timelines; negative: already past)."""
    value = float(number)
    if "." in number:  # a fraction of the pass (hires: 1 to 2 is the hires pass)
        value = (value - (1.0 if first_pass_steps is not None else 0.0)) * steps
    elif first_pass_steps is not None:  # a step number of the whole chain
        value -= first_pass_steps
    return min(steps, int(value))


def _text_at(node: lark.Tree[lark.Token] | lark.Token | None, step: int, steps: int, first: int | None) -> str:
    if node is None:  # an absent optional part: [to:when]'s "from", an empty alternative
        return ""
    if isinstance(node, lark.Token):
        return str(node)
    if node.data == "edit":
        before, after, _, number, _ = node.children
        chosen = before if step <= _when(str(number), steps, first) else after
        return _text_at(chosen, step, steps, first)
    if node.data == "alternation":
        options = node.children
        return _text_at(options[(step - 1) % len(options)], step, steps, first)
    return "".join(_text_at(child, step, steps, first) for child in node.children)


def prompt_schedule(prompt: str, steps: int, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    """``prompt``'s texts over a pass of ``steps`` steps: ``[(until, text), ...]`` in step order,
    one entry per step where the text may change (A1111's
    ``get_learned_conditioning_prompt_schedules``; ``first_pass_steps`` for the hires pass)."""
    tree = _tree(prompt)
    if tree is None:
        return [(steps, prompt)]
    ends = {steps}
    for node in tree.iter_subtrees():
        if node.data == "edit":
            when = _when(str(node.children[3]), steps, first_pass_steps)
            if when >= 1:
                ends.add(when)
        elif node.data == "alternation":
            ends.update(range(1, steps + 1))
    return [(end, _text_at(tree, end, steps, first_pass_steps)) for end in sorted(ends)]
