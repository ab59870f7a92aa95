"""Energy per prediction: RAPL counters when readable (measured), else a CodeCarbon-based estimate.

The estimate multiplies the CPU time a workload used by the power of one hardware thread, taken from
CodeCarbon's CPU power table (its TDP for this CPU model, or its default of 4 W per thread). CodeCarbon's
online tracker is never used.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _rapl_packages() -> list[Path]:
    zones = []
    for name_file in glob.glob("/sys/class/powercap/intel-rapl:*/name"):
        p = Path(name_file).parent
        try:
            if p.joinpath("name").read_text().startswith("package") and os.access(p / "energy_uj", os.R_OK):
                int(p.joinpath("energy_uj").read_text())
                zones.append(p)
        except (OSError, ValueError):
            continue
    return zones


@lru_cache(maxsize=1)
def watts_per_thread() -> tuple[float, str]:
    threads = os.cpu_count() or 1
    try:
        from codecarbon.core.cpu import TDP

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its "unknown CPU" notes are in our label

        tdp = TDP()
        watts = float(tdp.tdp) if tdp.tdp else 4.0 * threads
        return watts / threads, f"CodeCarbon CPU power table: {tdp.model or 'unknown CPU'}, {watts:g} W for {threads} threads"
    except Exception:  # codecarbon missing or its lookup failing: fall back to its documented default
        return 4.0, "CodeCarbon default of 4 W per thread (codecarbon not available)"


@dataclass
class EnergyMeter:
    """Wraps a workload: ``with meter.measure() as m: ...``; then ``m.joules``."""

    source: str  # "measured" | "estimated"
    method: str
    _zones: list | None = None

    @classmethod
    def create(cls) -> "EnergyMeter":
        zones = _rapl_packages()
        if zones:
            return cls("measured", f"RAPL ({len(zones)} package domain(s))", zones)
        w, how = watts_per_thread()
        return cls("estimated", f"CPU time x {w:.2f} W per thread ({how})")

    def _read(self) -> tuple[float, float]:
        cpu = time.process_time()
        if self._zones:
            return cpu, sum(int(z.joinpath("energy_uj").read_text()) for z in self._zones) / 1e6
        return cpu, 0.0

    def measure(self):
        return _Window(self)


class _Window:
    def __init__(self, meter: EnergyMeter):
        self.meter = meter
        self.joules = float("nan")
        self.cpu_s = float("nan")

    def __enter__(self):
        self._start = self.meter._read()
        return self

    def __exit__(self, *exc):
        cpu, joules = self.meter._read()
        self.cpu_s = cpu - self._start[0]
        if self.meter.source == "measured":
            delta = joules - self._start[1]
            self.joules = delta if delta >= 0 else float("nan")  # the counter wrapped: no reading
        else:
            self.joules = self.cpu_s * watts_per_thread()[0]
        return False
