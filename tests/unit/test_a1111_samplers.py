"""A1111's sampler labels: each names one engine scheduler, unambiguously, both ways."""

from __future__ import annotations

import pytest

from sdserve.api.dialects.a1111.samplers import LABELS, a1111_label, a1111_labels, lookup_a1111
from sdserve.engine.schedulers import SCHEDULERS, scheduler_names
from sdserve.errors import BadInput


def test_labels_are_unique_and_name_registry_entries() -> None:
    labels = [label.lower() for e in SCHEDULERS for label in a1111_labels(e)]
    assert len(labels) == len(set(labels))
    assert set(LABELS) <= set(scheduler_names()), "a label for a scheduler the engine does not have"


def test_a1111_labels_map_both_ways() -> None:
    assert lookup_a1111("DPM++ 2M Karras").name == "dpmpp_2m_karras"
    assert lookup_a1111("euler a").name == "euler_a"  # case-insensitive, as A1111 clients vary
    assert lookup_a1111("dpmpp_2m").name == "dpmpp_2m"  # our own names are accepted too
    assert a1111_label("dpmpp_2m") == "DPM++ 2M"
    assert a1111_label("euler_trailing") == "euler_trailing"  # no A1111 name: ours
    with pytest.raises(BadInput) as e:
        lookup_a1111("Restart")
    assert e.value.field == "sampler_name" and "Euler a" in e.value.message
