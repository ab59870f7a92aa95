"""report: what a person reads: report.html and report.md of a run directory (``render``), the terminal tables."""

from .markdown import render_markdown
from .terminal import print_summary

__all__ = ["render_markdown", "print_summary"]
