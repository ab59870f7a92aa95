"""Resident memory of this process, from /proc (Linux); elsewhere memory is reported as unknown."""

from __future__ import annotations


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MB, from /proc; (nan, nan) elsewhere."""
    try:
        status = open("/proc/self/status").read()
    except OSError:
        return float("nan"), float("nan")
    vals = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))}
    return vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan"))


def reset_peak() -> bool:  # Linux only; elsewhere memory is reported as unknown
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set (VmHWM) to the current one
        return True
    except OSError:
        return False
