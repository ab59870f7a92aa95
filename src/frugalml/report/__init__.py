"""report: what a person reads (report.md, the terminal table) from a decision."""

from .markdown import render_markdown
from .terminal import print_summary

__all__ = ["render_markdown", "print_summary"]
