"""ComfyUI's prompt syntax, parsed torch-free: the examples of ComfyUI's own token_weights
docstring (comfy/sd1_clip.py), and what it does not read (A1111's [x], BREAK, tags)."""

from __future__ import annotations

import pytest

from sdserve.engine.prompt_syntax import parse_comfy_prompt
from sdserve.errors import BadInput


def weights(text: str) -> list[tuple[str, float]]:
    return [(f.text, round(f.weight, 6)) for f in parse_comfy_prompt(text).fragments]


@pytest.mark.parametrize(("text", "want"), [
    ("(foo)", [("foo", 1.1)]),
    ("(foo)(bar)", [("foo", 1.1), ("bar", 1.1)]),
    ("(foo:2.0)", [("foo", 2.0)]),
    ("((foo))", [("foo", 1.21)]),
    ("((foo):1.1)", [("foo", 1.21)]),
    ("((foo:1.1))", [("foo", 1.1)]),
    ("(foo:0.0)", [("foo", 0.0)]),
    ("((foo:1.0):0.0)", [("foo", 1.0)]),
    ("foo ((((lol (cat:666) attack:100)))) baz",
     [("foo ", 1.0), ("lol ", 100.0), ("cat", 666.0), (" attack", 100.0), (" baz", 1.0)]),
    ("foo ((((lol (cat:666) attack):100))) baz",
     [("foo ", 1.0), ("lol ", 110.0), ("cat", 666.0), (" attack", 110.0), (" baz", 1.0)]),
])
def test_comfyuis_own_examples(text, want):
    assert weights(text) == want


def test_a1111_only_syntax_is_text():
    assert weights(r"a \(b\) [c] BREAK <lora:x:1>") == [("a (b) [c] BREAK <lora:x:1>", 1.0)]


def test_a_colon_without_a_number_is_text_and_the_group_weighs_1_1():
    assert weights("(x:nope)") == [("x:nope", 1.1)]


def test_plain_prompt_reads_as_one_fragment():
    parsed = parse_comfy_prompt("a cat, in a garden")
    assert parsed.plain and parsed.text == "a cat, in a garden"


@pytest.mark.parametrize("text", ["embedding:easynegative, blurry", "a, (embedding:foo:1.2)", "x\nembedding:bar"])
def test_textual_inversion_is_refused_naming_the_field(text):
    with pytest.raises(BadInput) as e:
        parse_comfy_prompt(text, "negative_prompt")
    assert e.value.field == "negative_prompt" and "embedding:" in e.value.detail


def test_a_word_ending_in_embedding_is_text():
    assert weights("noembedding:x") == [("noembedding:x", 1.0)]


def test_non_finite_weight_is_refused():
    with pytest.raises(BadInput):
        parse_comfy_prompt("(x:nan)")
