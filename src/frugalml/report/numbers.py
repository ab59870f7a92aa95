"""Numbers in words for the bench-lm and serving sections: short, unit-aware, a dash for what is missing."""

from __future__ import annotations

import math

DASH = "–"


def finite(x) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def num(x, digits: int = 3) -> str:
    """``digits`` significant digits without an exponent (1235, 41.2, 1.16, 0.0146; below 1e-4: 1.25e-05);
    integer digits are never dropped; "–" for a missing or non-finite number."""
    x = finite(x)
    if x is None:
        return DASH
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag < -4:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - mag)
    rounded = round(x, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > mag:  # 9.996 -> 10.0, not 10.00
        decimals = max(0, decimals - 1)
    return f"{x:.{decimals}f}"


def pct(x, digits: int = 3) -> str:
    """A fraction as a percentage (0.973 -> 97.3%); never 100% unless it is 1, never 0% unless it is 0."""
    x = finite(x)
    if x is None:
        return DASH
    s = num(100 * x, digits)
    if x < 1 and s in ("100", "100.0", "100.00"):
        return ">99.9%"
    return s + "%"


def times(x) -> str:
    """A ratio: 1.83x."""
    return DASH if finite(x) is None else f"{num(x)}x"


def short(x) -> str:
    """A setting as given (15, 2.5, 0.25): up to 4 significant digits, no trailing zeros."""
    return DASH if finite(x) is None else f"{float(x):.4g}"


def mb(b) -> str:
    """Bytes in MB (10^6), 3 significant digits."""
    b = finite(b)
    return DASH if b is None else num(b / 1e6)


def count(x) -> str:
    return DASH if finite(x) is None else str(int(x))


def words(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def unique(names: list[str]) -> list[str]:
    """Names made unique in order: a repeated one gets " (2)", " (3)" (two runs of one option)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out
