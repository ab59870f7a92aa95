"""What report.html and report.md are made of: sections of paragraphs, figures and tables.

Every figure carries its numbers as a table and a text alternative, so nothing on the page is only a picture;
both reports render the same sections, so the Markdown states the facts the HTML shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]  # already formatted cells
    caption: str = ""


@dataclass
class Figure:
    id: str  # unique in the page; the plot's points carry ids that start with it
    title: str
    svg: str  # an inline <svg> (plots.to_svg)
    alt: str  # what the plot shows, in words, for a screen reader and a printed page
    table: Table  # the plotted numbers


@dataclass
class Section:
    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text; the template escapes it
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    card: str | None = None  # Markdown shown verbatim (the efficiency card)


def markdown_table(t: Table) -> list[str]:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [f"_{t.caption}_", ""] if t.caption else []
    return lines + ["| " + " | ".join(cell(c) for c in t.columns) + " |", "|" + "---|" * len(t.columns),
                    *("| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows)]


def section_markdown(s: Section) -> str:
    """A section as Markdown: its paragraphs, each figure's table under the figure's title, its tables."""
    lines = [f"## {s.title}", ""]
    for p in s.paragraphs:
        lines += [p, ""]
    for f in s.figures:
        lines += [f"### {f.title}", "", f.alt, "", *markdown_table(f.table), ""]
    for t in s.tables:
        lines += [*markdown_table(t), ""]
    if s.card:
        lines += [s.card, ""]
    return "\n".join(lines)
