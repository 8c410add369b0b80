"""A1111 prompt styles: ``styles.csv`` (columns name, prompt, negative_prompt) in the data
directory, applied to a request's ``styles`` by name as A1111 does: a style text holding
``{prompt}`` gets the prompt put in its place, any other is appended after ", "."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sdserve.errors import BadInput

__all__ = ["Style", "read_styles", "apply_styles"]


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


def read_styles(data_dir: Path) -> list[Style]:
    """The styles in ``data_dir/styles.csv`` (none when there is no such file)."""
    path = data_dir / "styles.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8-sig") as f:
        return [Style(row["name"], row.get("prompt") or "", row.get("negative_prompt") or "")
                for row in csv.DictReader(f) if row.get("name")]


def _merge(text: str, style: str) -> str:
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return ", ".join(part for part in (text.strip(), style.strip()) if part)


def apply_styles(prompt: str, negative: str, names: list[str], styles: list[Style]) -> tuple[str, str]:
    """(prompt, negative prompt) with each named style applied in order; a 400 naming
    ``styles`` for a name styles.csv does not have (A1111 would skip it without a word)."""
    by_name = {s.name: s for s in styles}
    for name in names:
        style = by_name.get(name)
        if style is None:
            known = ", ".join(by_name) or "none (put a styles.csv in the data directory)"
            raise BadInput("styles", f"no style named {name!r}; available: {known}")
        prompt, negative = _merge(prompt, style.prompt), _merge(negative, style.negative_prompt)
    return prompt, negative
