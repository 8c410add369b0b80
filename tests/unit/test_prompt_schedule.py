"""Scheduled prompts expanded as A1111 1.10 expands them (its prompt_parser doctests, and the
hires timeline), without torch."""

from __future__ import annotations

import pytest

from sdserve.engine.prompt_schedule import is_scheduled, prompt_schedule

# A1111's get_learned_conditioning_prompt_schedules doctests, 10 steps.
A1111_CASES = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
    ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
    ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_CASES)
def test_a1111_schedules(prompt, expected):
    assert prompt_schedule(prompt, 10) == expected


def test_hires_timeline_goes_on_from_the_first_pass():
    # A1111: fractions 1-2 and step numbers past the first pass fall in the hires pass.
    assert prompt_schedule("a [b:.5] c", 10, 10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, 10) == [(5, "a  c"), (10, "a b c")]
    assert prompt_schedule("a [b:13] c", 10, 10) == [(3, "a  c"), (10, "a b c")]
    # In the first pass a fraction over 1 is the whole pass.
    assert prompt_schedule("a [b:1.5] c", 10) == [(10, "a  c")]


def test_when_without_a_decimal_point_is_a_step_number():
    assert prompt_schedule("[cat:dog:1]", 4) == [(1, "cat"), (4, "dog")]
    assert prompt_schedule("[cat:dog:1.0]", 4) == [(4, "cat")]
    assert prompt_schedule("[cat:dog:0]", 4) == [(4, "dog")]
    assert prompt_schedule("[cat:dog:0.5]", 20) == [(10, "cat"), (20, "dog")]


@pytest.mark.parametrize("text", ["[a:b:x]", "a [b|c", "a | b", "16:9 [sic]", "plain", "(a:1.2)", "a:b]",
                                  "(best quality:1.2), [blurry]"])
def test_what_is_no_schedule_is_the_text_as_it_is(text):
    assert not is_scheduled(text)
    assert prompt_schedule(text, 10) == [(10, text)]


@pytest.mark.parametrize("text", ["[cat:dog:0.5]", "[cat:10]", "[cat::3]", "[cat|dog]", "(x [a|b]:1.2)"])
def test_scheduled_forms(text):
    assert is_scheduled(text)
