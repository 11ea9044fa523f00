"""The report's section model: blocks (headings with a role, paragraphs, tables, preformatted lines, items, figures,
badges) that sections return and every emitter walks — text (the report's and the terminal summary at the end of a
fit), Markdown, HTML (:mod:`green_callbacks.report.render`).

A heading carries its :attr:`Heading.role` — what it heads — so an emitter lays it out by role, never by matching
its text. The text emitter (:func:`emit_text`) is here, since the terminal summary uses it without the rest of the
report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from green_callbacks.report._text import strip_control
from green_callbacks.report.format import text_table

__all__ = [
    "BANNER_ROLES",
    "LABEL_ROLES",
    "ROLES",
    "Badges",
    "Block",
    "Figure",
    "Heading",
    "Items",
    "Lines",
    "Paragraph",
    "Table",
    "emit_text",
]

ROLES = ("title", "runs", "run", "footprint", "search", "search-part", "phases", "comparisons", "greener",
         "offsetting", "badges", "skipped")
"""What a heading heads: the report's title, the runs' section, one run, a run's footprint, a hyperparameter search
and its parts, the use of the models (phases), the everyday comparisons, the counterfactual grids, offsetting,
badges, the files skipped."""
BANNER_ROLES = frozenset({"search", "phases", "comparisons"})
"""Headings the terminal prints as ``== title ==`` (the runs print their own summary; the rest are silent there)."""
LABEL_ROLES = frozenset({"search-part"})
"""Headings the terminal prints as a label line (``Sensitivity of ...:``)."""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    role: str = ""
    """One of :data:`ROLES`: how an emitter treats the heading, whatever its text says."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"a heading's role is one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: bool = False
    """Right-align the cells in text (numeric tables such as the epoch table)."""


@dataclass(frozen=True)
class Lines:
    """Preformatted lines: the terminal summary of a run, the badges' Markdown."""

    lines: tuple[str, ...]
    language: str = ""


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    name: str
    """A figure's file name (``run-<id>-energy.png``); shown where the emitter has the figure, else left out."""


@dataclass(frozen=True)
class Badges:
    """The report's badges: inline SVG in HTML; text and Markdown show the snippets (:class:`Lines`) instead."""


Block = Heading | Paragraph | Table | Lines | Items | Figure | Badges


def emit_text(blocks: Iterable[Block]) -> str:
    """The blocks as terminal text: banners and labels by heading role, tables padded (:func:`format.text_table`),
    the lines as they are, the skipped files named; figures and inline badges left out. Control characters from
    the records (ESC and OSC sequences) are removed."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            if block.role in BANNER_ROLES:
                parts.append(f"== {block.text} ==")
            elif block.role in LABEL_ROLES:
                parts.append("\n" + block.text + ":")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(text_table(block.header, block.rows, right=block.right) + ("" if block.right else "\n"))
        elif isinstance(block, Lines):
            parts.append("\n".join(block.lines) + ("" if block.language else "\n"))
        elif isinstance(block, Items):
            parts += [f"skipped {item}" for item in block.items]
    return strip_control("\n".join(parts).rstrip() + "\n")
