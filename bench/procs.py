"""What the benchmarks read of a server process from ``/proc`` (Linux): memory and CPU time."""

from __future__ import annotations

import os
from pathlib import Path


def _status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # the kernel writes kB
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def rss_mib(pid: int) -> float:
    """Resident memory now."""
    return _status_mib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    """The highest resident memory so far (it never goes down)."""
    return _status_mib(pid, "VmHWM")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds so far: of every thread of ``pid``, or of its thread ``tid`` alone
    (``tid == pid``: the main thread, which runs a uvicorn server's event loop). Fields 14-15 of ``stat``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
