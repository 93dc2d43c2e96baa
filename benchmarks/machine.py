"""How busy the machine is: a timing taken while other processes load the cores is not a measurement.

    >>> watch = LoadWatch()
    >>> watch.cores >= 1 and watch.peak >= 0.0
    True
"""

from __future__ import annotations

import os


class LoadWatch:
    """The highest 1-minute load average seen since construction (read again by `loaded`), against
    the cores this process may use. Above the core count, other work shares the cores, so a slow
    timing says nothing about the code: benchmarks report it as "not measured (loaded)", not a miss."""

    def __init__(self) -> None:
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.peak = os.getloadavg()[0]

    @property
    def loaded(self) -> bool:
        """Whether the load average has exceeded the core count at any reading so far (this one included)."""
        self.peak = max(self.peak, os.getloadavg()[0])
        return self.peak > self.cores

    def describe(self) -> str:
        """One line for the benchmark's output: the load seen so far against the cores."""
        loaded = self.loaded
        return f"load average up to {self.peak:.1f} on {self.cores} cores" + (" (loaded)" if loaded else "")
