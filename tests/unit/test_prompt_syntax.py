"""A1111 prompt syntax, parsed without torch: weights, escapes, BREAK, LoRA tags, refusals."""

from __future__ import annotations

import pytest

from sdserve.engine.prompt_syntax import BREAK, Fragment, LoraTag, parse_prompt
from sdserve.errors import BadInput


def _frags(text: str) -> list[tuple[str, float]]:
    return [(f.text, round(f.weight, 4)) for f in parse_prompt(text).fragments]


def test_plain_text_is_one_fragment_of_weight_one():
    p = parse_prompt("a cat in a garden")
    assert p.fragments == (Fragment("a cat in a garden", 1.0),) and p.plain and p.text == "a cat in a garden"


@pytest.mark.parametrize("text", ["(a cat in a garden:1.0)", "(a cat in a garden:1)", "( a cat in a garden :1.0 )"])
def test_weight_one_reads_as_plain_text(text):
    p = parse_prompt(text)
    assert p.plain and p.text.strip() == "a cat in a garden"


def test_emphasis_nests_and_multiplies():
    assert _frags("a (b) ((c)) [d] (e:1.5) ((f:2)) [[g]]") == [
        ("a ", 1.0), ("b", 1.1), (" ", 1.0), ("c", 1.21), (" ", 1.0), ("d", 0.9091), (" ", 1.0), ("e", 1.5),
        (" ", 1.0), ("f", 2.2), (" ", 1.0), ("g", 0.8264)]


def test_escapes_are_literal_brackets():
    p = parse_prompt(r"a \(b\) \[c\] \\ d")
    assert p.plain and p.text == "a (b) [c] \\ d"


def test_unclosed_brackets_run_to_the_end_with_a_warning_stray_closers_are_text():
    p = parse_prompt("a (b c")
    assert _frags("a (b c") == [("a ", 1.0), ("b c", 1.1)]
    assert p.warnings and "never closed" in p.warnings[0]
    assert parse_prompt("a) b]").plain and parse_prompt("a) b]").text == "a) b]"
    assert parse_prompt("a) b]").warnings == ()


def test_break_splits_and_swallows_the_spaces_around_it():
    assert _frags("city BREAK night") == [("city", 1.0), (BREAK, 1.0), ("night", 1.0)]
    assert not parse_prompt("city BREAK night").plain
    assert parse_prompt("BREAKFAST and break").plain  # only the word BREAK, in capitals


def test_lora_tags_with_text_encoder_and_unet_weights_read_as_a1111():
    # extra_networks_lora.py: positional te then unet (unet defaults to te), or te=/unet=.
    assert parse_prompt("<lora:x:0.8:0.2>").loras == (LoraTag("x", 0.2, 0.8),)
    assert parse_prompt("<lora:x:te=0.3:unet=0.9>").loras == (LoraTag("x", 0.9, 0.3),)
    assert parse_prompt("<lora:x:unet=0.4>").loras == (LoraTag("x", 0.4, 1.0),)
    assert parse_prompt("<lora:x:0.6:0.6>").loras == (LoraTag("x", 0.6),)  # equal: one weight
    for bad in ("<lora:x:1:0.5:8>", "<lora:x:dyn=4>", "<lora:x:foo=1>", "<lora:x:1:zz>"):
        with pytest.raises(BadInput):
            parse_prompt(bad)


def test_lora_tags_are_taken_out_of_the_text():
    p = parse_prompt("a cat <lora:add_detail:0.7>, <lyco:style> night")
    assert p.loras == (LoraTag("add_detail", 0.7), LoraTag("style", 1.0))
    assert p.text == "a cat ,  night"
    with pytest.raises(BadInput) as e:
        parse_prompt("<lora:x:strong>", "negative_prompt")
    assert e.value.field == "negative_prompt"


def test_brackets_that_are_no_schedule_read_as_a1111_reads_them():
    # Scheduled forms are expanded before this parser (engine.prompt_schedule); what is left
    # of a bad one is emphasis, as in A1111's parse_prompt_attention.
    assert parse_prompt("[a:b:x]").fragments == (Fragment("a:b:x", 1 / 1.1),)
    assert parse_prompt("x [a|b").warnings


def test_colons_outside_a_weight_are_text():
    assert parse_prompt("ratio 16:9, time 12:30").text == "ratio 16:9, time 12:30"
    assert parse_prompt(r"\[cat:dog:0.5\]").text == "[cat:dog:0.5]"
