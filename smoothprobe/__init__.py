"""smoothprobe: measure how smooth the loss is along training and derive the warm-up from it.

The pieces most users need: `Recorder` (probes inside any PyTorch loop), `load_run` (read a run
directory), `fit_run` (fit the smoothness model), `AdaptiveWarmup` (the loss-driven scheduler), and
`train`/`TrainConfig` (the built-in training loop). Reports live in `smoothprobe.report`, the
framework adapters in `smoothprobe.integrations`.

They are imported on first use (PEP 562), so `import smoothprobe` does not import torch: the
command line can install its Ctrl-C handling before the seconds that torch takes to import.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smoothprobe.errors import SmoothprobeError
    from smoothprobe.fit import SmoothnessFit, fit_run
    from smoothprobe.schedule.adaptive import AdaptiveWarmup
    from smoothprobe.store import Run, load_run
    from smoothprobe.train import TrainConfig, train
    from smoothprobe.writer import Recorder

_HOME = {
    "AdaptiveWarmup": "smoothprobe.schedule.adaptive",
    "Recorder": "smoothprobe.writer",
    "Run": "smoothprobe.store",
    "SmoothnessFit": "smoothprobe.fit",
    "SmoothprobeError": "smoothprobe.errors",
    "TrainConfig": "smoothprobe.train",
    "fit_run": "smoothprobe.fit",
    "load_run": "smoothprobe.store",
    "train": "smoothprobe.train",
}
"""Where each public name lives."""

__all__ = [
    "AdaptiveWarmup",
    "Recorder",
    "Run",
    "SmoothnessFit",
    "SmoothprobeError",
    "TrainConfig",
    "fit_run",
    "load_run",
    "train",
]


def __getattr__(name: str) -> Any:
    """A public name, or a submodule (`smoothprobe.fit`), imported on first access."""
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    """The public names (what `dir(smoothprobe)` and completion offer)."""
    return sorted(__all__)


class _Package(types.ModuleType):
    """The package's module type: a submodule named like a public function (`smoothprobe.train`,
    home of `train`) does not replace the function when it is imported (the import system sets the
    parent's attribute), so `smoothprobe.train(...)` is the function whatever was imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _HOME and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
