"""Plots as inline SVG (matplotlib, Agg): text stays text, no font is embedded or fetched, colours and markers
are safe for colour-blind readers (Okabe and Ito's palette, and a marker shape per series)."""

from __future__ import annotations

import io
import re
from contextlib import contextmanager

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "h", "*"]  # no X: an X means harm (groups) or INVALID (serving)
GREY = "#999999"
RECOMMENDED = "#D55E00"


@contextmanager
def figure(width: float = 6.4, height: float = 3.6, ncols: int = 1, nrows: int = 1):
    """A matplotlib figure and its axes, closed afterwards; ``svg = to_svg(fig, ...)`` inside the block."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "frugalml"}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
        try:
            yield fig, (axes[0][0] if nrows == ncols == 1 else axes)
        finally:
            plt.close(fig)


def to_svg(fig, fig_id: str, alt: str) -> str:
    """The figure as an ``<svg>`` element to inline: no XML prologue, sized by CSS, labelled for screen readers."""
    buf = io.StringIO()
    if not fig.legends:  # a figure legend is placed by hand below the axes; the tight bbox keeps it in
        fig.tight_layout()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                 lambda m: f'<svg {m.group(1)}', svg, count=1)
    title = alt.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return svg.replace("<svg ", f'<svg id="{fig_id}" role="img" aria-labelledby="{fig_id}-title" '
                                'preserveAspectRatio="xMidYMid meet" ', 1).replace(
        ">", f'><title id="{fig_id}-title">{title}</title>', 1)


def point_id(fig_id: str, name: str) -> str:
    """The id of a named point (a candidate, a variant, a rate) in a plot: ``{fig_id}-pt-{name}``, one per point,
    so a test (and a reader's browser) finds every candidate in every plot."""
    return f"{fig_id}-pt-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)
